
/*
 * Fuzz target: the key file of linegate_clerk_jwks
 * (ngx_http_linegate_jwt_keys_load(): JWKS JSON or PEM public keys,
 * src/ngx_http_linegate_jwt.c).  The input is the file's content; it is
 * operator-supplied rather than remote, but it is parsed by the module
 * and then trusted, so it is fuzzed like the rest.  A set that loads is
 * then used to check a token, so that a loaded key is a usable one.
 */


#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <unistd.h>

#include "ngx_http_linegate_jwt.h"


static char  fuzz_path[64];


int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
    int  fd;

    /* one file, rewritten per input: on /dev/shm when there is one */
    snprintf(fuzz_path, sizeof(fuzz_path), "%s/linegate-fuzz-jwks-%ld",
             access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp",
             (long) getpid());

    fd = creat(fuzz_path, 0600);
    if (fd == -1) {
        abort();
    }

    close(fd);

    return 0;
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char                             err[512];
    FILE                            *f;
    const char                      *reason;
    ngx_http_linegate_jwt_keys_t    *keys;
    ngx_http_linegate_jwt_claims_t   claims;
    ngx_http_linegate_jwt_params_t   params = { NULL, NULL, 0, 5, 1700000000L };

    static const char  token[] =
        "eyJhbGciOiJSUzI1NiIsImtpZCI6ImsxIn0.e30.AAAA";

    f = fopen(fuzz_path, "w");
    if (f == NULL || fwrite(data, 1, size, f) != size || fclose(f) != 0) {
        abort();
    }

    err[0] = '\0';
    keys = ngx_http_linegate_jwt_keys_load(fuzz_path, err, sizeof(err));

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
