
/*
 * Fuzz target: the key file of linegate_clerk_jwks
 * (ngx_http_linegate_jwt_keys_load(): JWKS JSON or PEM public keys,
 * src/ngx_http_linegate_jwt.c, included).  The input is the file's
 * content, read through fmemopen() in place of fopen(); it is
 * operator-supplied rather than remote, but it is parsed by the module
 * and then trusted, so it is fuzzed like the rest.  A set that loads is
 * then used to check a token, so that a loaded key is a usable one.
 */


#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ngx_http_linegate_jwt.h"


/* the key file is the input itself: no file system per execution */
static const uint8_t  *fuzz_data;
static size_t          fuzz_size;

/*
 * read_file() takes MAX_FILE + 2 bytes per file: under ASan a fresh
 * mmap() per execution, most of this target's time.  That one block is
 * a static buffer here (ASan still guards its end); any other size is
 * malloc()'s.
 */
static char  fuzz_file_buf[NGX_HTTP_LINEGATE_JWT_MAX_FILE + 2];

static void *
fuzz_malloc(size_t n)
{
    return n == sizeof(fuzz_file_buf) ? fuzz_file_buf : malloc(n);
}

static void
fuzz_free(void *p)
{
    if (p != fuzz_file_buf) {
        free(p);
    }
}

#define fopen(path, mode)  fmemopen((void *) fuzz_data, fuzz_size, mode)
#define malloc(n)          fuzz_malloc(n)
#define free(p)            fuzz_free(p)
#include "ngx_http_linegate_jwt.c"
#undef fopen
#undef malloc
#undef free


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char                             err[512];
    const char                      *reason;
    ngx_http_linegate_jwt_keys_t    *keys;
    ngx_http_linegate_jwt_claims_t   claims;
    ngx_http_linegate_jwt_params_t   params = { NULL, NULL, 0, 5, 1700000000L };

    static const char  token[] =
        "eyJhbGciOiJSUzI1NiIsImtpZCI6ImsxIn0.e30.AAAA";

    if (size == 0) {
        /* fmemopen() needs a buffer: an empty file is a seed of jwt's */
        return 0;
    }

    fuzz_data = data;
    fuzz_size = size;

    err[0] = '\0';
    keys = ngx_http_linegate_jwt_keys_load("clerk.jwks", err, sizeof(err));

    if (keys == NULL) {
        /* a refusal always says why */
        if (err[0] == '\0' || memchr(err, 0, sizeof(err)) == NULL) {
            __builtin_trap();
        }

        return 0;
    }

    (void) ngx_http_linegate_jwt_verify(keys, token, sizeof(token) - 1,
                                        &params, &claims, &reason);

    ngx_http_linegate_jwt_keys_free(keys);

    return 0;
}
