# The harness's free ports are claimed: two test files that `prove -j`
# runs side by side never start their servers on the same port (they
# once did: a port both found free before either bound it, and one
# nginx failed "bind() ... Address already in use").
use strict;
use warnings;
use lib 't/lib';

use Test::More;
use POSIX qw(_exit);
use LG::Stack;

my $claims = ($ENV{TMPDIR} // '/tmp') . '/lg-test-ports';

# what another test process gets when it claims $port: 1 or 0
sub claim_elsewhere {
    my ($port) = @_;
    my $pid = fork // die "fork: $!";
    _exit(LG::Stack::_claim_port($port) ? 1 : 0) if $pid == 0;
    waitpid $pid, 0;
    return $? >> 8;
}

my $s = LG::Stack->new;
my @ports = $s->_free_ports(3);
is(scalar(grep { -f "$claims/$_" } @ports), 3, 'each port found is claimed');
is(scalar(keys %{ { map { $_ => 1 } @ports } }), 3, 'three ports, not two');
is(claim_elsewhere($ports[0]), 0, 'another process cannot claim it');

$s->_release_ports;
is(scalar(grep { -e "$claims/$_" } @ports), 0, 'released with the stack');
is(claim_elsewhere($ports[0]), 1, 'then another process can');
unlink "$claims/$ports[0]";

# a claim whose process is gone (a test killed before its END blocks)
my $dead = fork // die "fork: $!";
_exit(0) if $dead == 0;
waitpid $dead, 0;
open my $fh, '>', "$claims/$ports[1]" or die "$claims/$ports[1]: $!";
print $fh "$dead\n";
close $fh;
ok(LG::Stack::_claim_port($ports[1]), "a dead process's claim is taken over");
open $fh, '<', "$claims/$ports[1]" or die "$claims/$ports[1]: $!";
is(scalar <$fh>, "$$\n", 'by this process');
close $fh;
unlink "$claims/$ports[1]";

done_testing;
