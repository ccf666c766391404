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

use File::Temp qw(tempdir);
use IO::Select;
use IO::Socket::INET;
use POSIX ();
use LG::Stack;

my %LIVE;

sub new {
    my ($class) = @_;
    my $dir = tempdir('lg-stall-proxy-XXXXXX', TMPDIR => 1, CLEANUP => 1);
    my $self = bless { port => (LG::Stack::_free_ports(1))[0],
                       file => "$dir/proxy", owner => $$ }, $class;
    $LIVE{$self} = $self;
    return $self;
}

sub port  { $_[0]{port} }
sub to    { $_[0]{to} = $_[1] }
sub asked { -e "$_[0]{file}.asked" }

sub release {
    my ($self, $how) = @_;
    open my $f, '>', "$self->{file}.tmp" or die "$self->{file}.tmp: $!";
    print $f $how // 'forward';
    close $f;
    rename "$self->{file}.tmp", "$self->{file}.release" or die "$!";
}

sub stop {
    my ($self) = @_;
    return unless $self->{pid} && $self->{owner} == $$;
    kill 'KILL', $self->{pid};
    waitpid $self->{pid}, 0;
    delete $self->{pid};
}

sub start {
    my ($self, %o) = @_;
    $self->stop;
    unlink map { "$self->{file}.$_" } qw(release asked);
    $self->release('close') unless $o{hold};
    my $srv = IO::Socket::INET->new(LocalAddr => '127.0.0.1',
                                    LocalPort => $self->{port},
                                    Listen => 128, ReuseAddr => 1)
        or die "the stalling proxy on $self->{port}: $!";
    my $pid = fork // die "fork: $!";
    if ($pid) {
        close $srv;
        $self->{pid} = $pid;
        return $self;
    }
    # (a child never returns to the test's code, nor runs its END)
    eval { $self->_serve($srv) };
    POSIX::_exit(1);
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

# $? saved and set again, as LG::Stack's END does (waitpid sets it)
END {
    my $status = $?;
    $_->stop for values %LIVE;
    $? = $status;
}

1;
