package LG::StallProxy;

# A TCP proxy of the test's own in front of one Redis node, whose
# clients' bytes are kept back on cue. Put first in a cluster's seeds
# (LG::Stack first_seed => $proxy->port), it is the node a new worker
# asks CLUSTER SLOTS first: the map stays unknown until released. A
# forked child does the relaying:
#
#   my $p = LG::StallProxy->new;    # a free port, $p->port
#   $p->to($port);                  # the node's (before start)
#   $p->start;                  # every connection closed at once (a seed
#                               # that fails: a worker leaves it alone)
#   $p->start(hold => 1);       # (again: restarted, connections closed)
#                               # what clients write is kept back
#   $p->asked;                  # CLUSTER SLOTS is among it
#   $p->release;                # written to the node, relayed from now on
#   $p->release('close');       # or the held connections closed, and any
#                               # after
#   $p->stop;                   # (or at exit)
#
# The test talks to the child through a file of its own (written whole,
# renamed into place), as with LG::FakeSentinel.

use strict;
use warnings;

use IO::Select;
use IO::Socket::INET;
use parent 'LG::ForkedListener';

sub new {
    return $_[0]->SUPER::new(tag => 'lg-stall-proxy', file => 'proxy',
                             what => 'the stalling proxy', backlog => 128);
}

sub to    { $_[0]{to} = $_[1] }
sub asked { -e "$_[0]{file}.asked" }

sub release {
    my ($self, $how) = @_;
    open my $f, '>', "$self->{file}.tmp" or die "$self->{file}.tmp: $!";
    print $f $how // 'forward';
    close $f;
    rename "$self->{file}.tmp", "$self->{file}.release" or die "$!";
}

# before the child starts: nothing held unless asked
sub _prepare {
    my ($self, %o) = @_;
    unlink map { "$self->{file}.$_" } qw(release asked);
    $self->release('close') unless $o{hold};
}

sub _serve {
    my ($self, $srv) = @_;
    my $file = $self->{file};
    $SIG{PIPE} = 'IGNORE';
    my $sel = IO::Select->new($srv);
    # %peer: each socket's other end (undef: a client held); %held: what
    # a held client wrote
    my (%peer, %held, %sock);
    my $how = '';
    my $close = sub {
        for my $fh (@_) {
            next unless $fh;
            $sel->remove($fh);
            delete $held{$fh};
            delete $peer{$fh};
            delete $sock{$fh};
            close $fh;
        }
    };
    while (1) {
        if (!$how && -e "$file.release") {
            open my $f, '<', "$file.release" or die;
            $how = <$f> // 'forward';
            for my $fh (grep { exists $held{$_} } values %sock) {
                if ($how eq 'close') {
                    $close->($fh);
                    next;
                }
                my $up = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                               PeerPort => $self->{to})
                    or do { $close->($fh); next };
                syswrite $up, delete $held{$fh};
                @peer{$fh, $up} = ($up, $fh);
                $sock{$up} = $up;
                $sel->add($up);
            }
        }
        for my $fh ($sel->can_read(0.05)) {
            if ($fh == $srv) {
                my $c = $srv->accept or next;
                if ($how eq 'close') {
                    close $c;
                    next;
                }
                $sock{$c} = $c;
                $sel->add($c);
                if ($how) {
                    my $up = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                                   PeerPort => $self->{to})
                        or do { $close->($c); next };
                    @peer{$c, $up} = ($up, $c);
                    $sock{$up} = $up;
                    $sel->add($up);
                } else {
                    $held{$c} = '';
                }
                next;
            }
            my $n = sysread $fh, my $chunk, 65536;
            if (!$n) {
                $close->($fh, $peer{$fh});
                next;
            }
            if (exists $held{$fh}) {
                $held{$fh} .= $chunk;
                if ($held{$fh} =~ /\bSLOTS\r\n/i && !-e "$file.asked") {
                    open my $f, '>', "$file.asked" or die;
                    close $f;
                }
                next;
            }
            syswrite $peer{$fh}, $chunk if $peer{$fh};
        }
    }
}

1;
