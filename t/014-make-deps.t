# make run and make test install what they need themselves: make deps
# runs first (before anything reads nginx-dev's /usr/share/nginx/src),
# prints nothing when every package is there, and, run by a user who
# cannot install, names what is missing.
use strict;
use warnings;
use lib 't/lib';

use Test::More;
use File::Temp qw(tempdir);
use LG::Stack;

# run from make test (or make -j): not the outer make's flags or jobserver
delete @ENV{qw(MAKEFLAGS MFLAGS MAKELEVEL MAKEOVERRIDES)};

my $root = $LG::Stack::ROOT;
my $make = "make --no-print-directory -C '$root'";

my $out = qx{$make -s deps 2>&1};
is($?, 0, 'make deps: exit 0');
is($out, '', 'make deps: quiet when everything is installed');

# the order make would run things in, for a build directory not made yet
my $dir = tempdir('linegate-deps-XXXXXX', TMPDIR => 1, CLEANUP => 1);
for my $target ('test', 'run', "$dir/build/Makefile") {
    my @lines = split /\n/, qx{$make -n BUILD='$dir/build' '$target' 2>&1};
    my ($deps) = grep { $lines[$_] =~ /dpkg-query/ } 0 .. $#lines;
    my ($conf) = grep { $lines[$_] =~ /\.\/configure/ } 0 .. $#lines;
    ok(defined $deps, "make $target: checks the packages");
    ok(defined $deps && defined $conf && $deps < $conf,
       "make $target: before configuring against the nginx sources");
}

for my $target (qw(test run)) {
    my @lines = split /\n/, qx{$make -n '$target' 2>&1};
    ok(scalar(grep { /dpkg-query/ } @lines),
       "make $target, module already built: still checks the packages");
}

SKIP: {
    skip 'needs root to switch to nobody', 2 if $> != 0;
    # the Makefile copied where nobody may read it: the checkout itself
    # may be private (a clean clone in a mktemp -d directory is 0700)
    my $pub = tempdir('linegate-deps-pub-XXXXXX', TMPDIR => 1,
                      CLEANUP => 1);
    system('cp', "$root/Makefile", "$pub/Makefile") == 0
        or die "cp Makefile: $?";
    chmod 0755, $pub;
    chmod 0644, "$pub/Makefile";
    my $o = qx{su nobody -s /bin/sh -c "make --no-print-directory -C '$pub' -s deps DEB_PACKAGES='perl linegate-no-such-package'" 2>&1};
    isnt($?, 0, 'a missing package, not root: make deps fails');
    like($o, qr/missing packages: linegate-no-such-package \(make deps as root\)/,
         'and names it');
}

done_testing;
