# nginx's style, the part a machine can hold (STYLE.md): every line of the
# module's sources (src/*.c, src/*.h, the Lua scripts and their includes,
# config) is at most 80 columns, has no tab and no trailing blank. Each
# offence prints as "file:line". No nginx, no Redis: runs in a second.
use strict;
use warnings;
use lib 't/lib';

use File::Temp ();
use Test::More;
use LG::Stack;

my $root = $LG::Stack::ROOT;
my @files = (glob("$root/src/*.c"), glob("$root/src/*.h"),
             glob("$root/src/lua/*.lua"), glob("$root/src/lua/include/*.lua"),
             "$root/config");

ok(@files > 50, scalar(@files) . ' source files read');

my (@long, @tab, @blank);
for my $f (@files) {
    open my $fh, '<', $f or die "$f: $!";
    (my $name = $f) =~ s{^\Q$root\E/}{};
    while (my $line = <$fh>) {
        chomp $line;
        push @long, "$name:$." if length $line > 80;
        push @tab, "$name:$." if $line =~ /\t/;
        push @blank, "$name:$." if $line =~ /[ \t]$/;
    }
    close $fh;
}

is(scalar @long, 0, 'no line over 80 columns') or diag "@long";
is(scalar @tab, 0, 'no tab') or diag "@tab";
is(scalar @blank, 0, 'no trailing blank') or diag "@blank";

# src/lua/embed.pl sends the scripts without their lines' indentation: it
# refuses a script where that would change a string (a long string, one
# continued over lines by a backslash or \z), and strips the rest
subtest 'embed.pl: no string changed by the stripping' => sub {
    my $dir = File::Temp::tempdir(CLEANUP => 1);
    mkdir "$dir/lua" or die "$dir/lua: $!";
    my %script = (
        long   => "local x = [[a\n  b]]\nreturn x\n",
        cont   => "local x = \"a\\\n  b\"\nreturn x\n",
        z      => "local x = \"a\\z\n  b\"\nreturn x\n",
        plain  => "if true then\n    return \"a\\n\"\nend\n",
    );
    for my $name (sort keys %script) {
        my $f = "$dir/lua/$name.lua";
        open my $fh, '>', $f or die "$f: $!";
        print $fh $script{$name};
        close $fh;
        my $out = qx{perl $root/src/lua/embed.pl $dir/$name.h $f 2>&1};
        if ($name eq 'plain') {
            is($?, 0, 'plain: embedded') or diag $out;
            open my $h, '<', "$dir/$name.h" or die "$dir/$name.h: $!";
            my $c = do { local $/; <$h> };
            like($c, qr/"return \\"a\\\\n\\"\\n"/,
                 'plain: its indentation cut, its string kept');
        } else {
            isnt($?, 0, "$name: refused");
            like($out, qr/indentation would be cut/, "$name: why");
        }
    }
};

done_testing;
