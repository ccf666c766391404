package LG::ForkedListener;

# The process skeleton of a server of the test's own that a forked child
# runs on a port (LG::FakeSentinel, LG::StallProxy): a free port and a
# directory of its own for the files the test and the child talk
# through, start (again: restarted, its connections closed), stop (only
# by the process that made it: a forked child of the test never kills
# it), and every one still running stopped at exit.
#
#   package LG::Mine;
#   use parent 'LG::ForkedListener';
#   sub new { $_[0]->SUPER::new(tag => 'lg-mine', file => 'mine',
#                               what => 'my server', backlog => 16) }
#   sub _prepare { my ($self, %o) = @_; ... }  # before the child starts
#   sub _serve { my ($self, $srv, %o) = @_; ... }  # the child: never
#                                                  # returns
#
# $self->{file} is the path the subclass's files start with.

use strict;
use warnings;

use File::Temp qw(tempdir);
use IO::Socket::INET;
use POSIX ();
use LG::Stack;

my %LIVE;

sub new {
    my ($class, %o) = @_;
    my $dir = tempdir("$o{tag}-XXXXXX", TMPDIR => 1, CLEANUP => 1);
    my $self = bless { port => (LG::Stack::_free_ports(1))[0],
                       file => "$dir/$o{file}", what => $o{what},
                       backlog => $o{backlog}, owner => $$ }, $class;
    $LIVE{$self} = $self;
    return $self;
}

sub port { $_[0]{port} }

sub stop {
    my ($self) = @_;
    return unless $self->{pid} && $self->{owner} == $$;
    kill 'KILL', $self->{pid};
    waitpid $self->{pid}, 0;
    delete $self->{pid};
}

sub _prepare { }

sub start {
    my ($self, %o) = @_;
    $self->stop;
    $self->_prepare(%o);
    my $srv = IO::Socket::INET->new(LocalAddr => '127.0.0.1',
                                    LocalPort => $self->{port},
                                    Listen => $self->{backlog},
                                    ReuseAddr => 1)
        or die "$self->{what} on $self->{port}: $!";
    my $pid = fork // die "fork: $!";
    if ($pid) {
        close $srv;
        $self->{pid} = $pid;
        return $self;
    }
    # (a child never returns to the test's code, nor runs its END)
    eval { $self->_serve($srv, %o) };
    POSIX::_exit(1);
}

# $? saved and set again, as LG::Stack's END does (waitpid sets it)
END {
    my $status = $?;
    $_->stop for values %LIVE;
    $? = $status;
}

1;
