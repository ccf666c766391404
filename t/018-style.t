# nginx's style, the part a machine can hold (STYLE.md): every line of the
# module's sources (src/*.c, src/*.h, the Lua scripts and their includes,
# config) is at most 80 columns, has no tab and no trailing blank. Each
# offence prints as "file:line". No nginx, no Redis: runs in a second.
use strict;
use warnings;
use lib 't/lib';

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

done_testing;
