
/*
 * linegate: the hash of a short key (the header says where it is used).
 */


#include <string.h>

#include "ngx_http_linegate_hash.h"


/* odd 64-bit constants of the golden ratio and of MurmurHash3's fmix64 */
#define NGX_HTTP_LINEGATE_HASH_K1  0x9e3779b97f4a7c15ULL
#define NGX_HTTP_LINEGATE_HASH_K2  0xff51afd7ed558ccdULL


static uint64_t
ngx_http_linegate_hash_step(uint64_t h, uint64_t w)
{
    h ^= w;
    h *= NGX_HTTP_LINEGATE_HASH_K1;

    return h ^ (h >> 29);
}


uint32_t
ngx_http_linegate_hash(const unsigned char *data, size_t len)
{
    uint64_t  h, w;

    h = NGX_HTTP_LINEGATE_HASH_K2 ^ len;

    while (len >= sizeof(uint64_t)) {
        memcpy(&w, data, sizeof(uint64_t));
        h = ngx_http_linegate_hash_step(h, w);
        data += sizeof(uint64_t);
        len -= sizeof(uint64_t);
    }

    if (len) {
        w = 0;
        memcpy(&w, data, len);
        h = ngx_http_linegate_hash_step(h, w);
    }

    /* fmix64: the high bits' mixing brought down to the low ones */
    h ^= h >> 33;
    h *= NGX_HTTP_LINEGATE_HASH_K2;
    h ^= h >> 33;

    return (uint32_t) h;
}
