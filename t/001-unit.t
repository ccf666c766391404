# Pure-C unit tests (src/ngx_http_linegate_{crypto,jwt,cache,chars,
# redis_slots,redis_arena,redis_hold,redis_wait,redis_error}.c), run outside nginx.  Builds them with t/unit/build.sh
# (honours $CC) into a temporary directory and relays each binary's TAP as
# a subtest.

use strict;
use warnings;

use File::Spec;
use File::Temp qw(tempdir);
use FindBin;
use Test::More;

my $root = File::Spec->rel2abs("$FindBin::Bin/..");
my $dir = tempdir('linegate-unit-XXXXXX', TMPDIR => 1, CLEANUP => 1);

my $log = `bash "$root/t/unit/build.sh" "$dir" 2>&1`;
is($?, 0, 'unit tests build') or diag($log);

for my $name (qw(test_crypto test_jwt test_cache test_chars
                  test_slots test_arena test_hold test_wait
                  test_redis_error)) {
    subtest $name => sub {
        my $bin = "$dir/$name";

        plan skip_all => "$name was not built" unless -x $bin;

        my @lines = `"$bin"`;
        my $status = $?;
        my ($plan, $passed, $failed) = (undef, 0, 0);

        for my $line (@lines) {
            chomp $line;

            if ($line =~ /^(not )?ok \d+(?: - (.*))?$/) {
                ok(!defined $1, $2 // '');
                defined $1 ? $failed++ : $passed++;

            } elsif ($line =~ /^1\.\.(\d+)$/) {
                $plan = $1;

            } elsif ($line =~ /^Bail out!/) {
                fail($line);

            } elsif ($line =~ /^#/) {
                note($line);
            }
        }

        is($status, 0, "$name exits 0");
        ok($passed > 0, "$name ran at least one test");
        is($failed, 0, "$name has no 'not ok'");
        is($plan, $passed + $failed, "$name ran as many tests as planned");

        done_testing();
    };
}

# the arena's memory: every block freed, whichever way its reader goes
SKIP: {
    skip 'valgrind is not installed', 1
        unless -x '/usr/bin/valgrind' && -x "$dir/test_arena";
    my $vg = 'valgrind -q --leak-check=full --errors-for-leak-kinds=all '
           . '--error-exitcode=3';
    my $out = `$vg "$dir/test_arena" 2>&1 >/dev/null`;
    is($? >> 8, 0, 'test_arena under valgrind: no error, no leak')
        or diag($out);
}

done_testing();
