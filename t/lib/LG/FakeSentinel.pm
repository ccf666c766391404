package LG::FakeSentinel;

# A Redis Sentinel of the test's own, for what the real ones cannot be
# made to do on cue: name a stale master, keep an answer back, announce
# a +switch-master the test writes. Put first in the stack's list
# (first_sentinel), it is the one a new worker asks first. A forked
# child listens on its port and answers each connection's commands:
#
#   SENTINEL (get-master-addr-by-name)  127.0.0.1 and the master's port
#                                       (following: what that sentinel
#                                       names)
#   PSUBSCRIBE, PING                    as a sentinel does with
#                                       subscribe => 1; an ACL's
#                                       -NOPERM to PSUBSCRIBE with
#                                       subscribe => 'refuse'; else
#                                       closes
#   anything else                       closes the connection
#
#   my $fake = LG::FakeSentinel->new;      # a free port, $fake->port
#   $fake->start(master => $port);         # (again: restarted, and the
#                                          # connections closed)
#   $fake->master($other);                 # named from now on
#   $fake->follow($port);                  # or what the (real) sentinel
#                                          # on $port names, asked at
#                                          # each query (until start)
#   $fake->start(master => $port, subscribe => 1);
#   $fake->psubscribes;                    # PSUBSCRIBEs it was sent
#                                          # since start
#   $fake->publish($msg);                  # a pmessage on +switch-master
#                                          # to each subscriber, once
#                                          # there is one
#   $fake->start(master => $port, hold => 1);
#   $fake->asked;                          # a query is kept back
#   $fake->release;                        # answered, and any after
#   $fake->stop;                           # (or at exit)
#
# The test talks to the child through files in a directory of its own
# (written whole, renamed into place: the child never reads half).

use strict;
use warnings;

use IO::Select;
use IO::Socket::INET;
use LG::Test qw(take_command resp);
use parent 'LG::ForkedListener';

sub new {
    return $_[0]->SUPER::new(tag => 'lg-fake-sentinel', file => 'sentinel',
                             what => 'the fake sentinel', backlog => 16);
}

sub _slurp {
    open my $f, '<', $_[0] or return undef;
    local $/;
    return scalar <$f>;
}

sub _spew {
    my ($file, $text) = @_;
    open my $f, '>', "$file.tmp" or die "$file.tmp: $!";
    print $f $text;
    close $f;
    rename "$file.tmp", $file or die "$file: $!";
}

sub master {
    my ($self, $port) = @_;
    _spew("$self->{file}.master", $port);
}

sub publish {
    my ($self, $msg) = @_;
    _spew("$self->{file}.say", $msg);
}

sub follow {
    my ($self, $port) = @_;
    _spew("$self->{file}.follow", $port);
}

sub asked   { -e "$_[0]{file}.asked" }
sub release { _spew("$_[0]{file}.hold", '') }

sub psubscribes {
    my $n = _slurp("$_[0]{file}.psubscribes") // '';
    return $n =~ tr/\n//;
}

# before the child starts: nothing held, said, asked or followed yet
sub _prepare {
    my ($self, %o) = @_;
    unlink map { "$self->{file}.$_" } qw(hold asked say follow psubscribes);
    $self->master($o{master});
}

# ($host, $port) the sentinel on $port names, or () (within 2 s)
sub _ask {
    my ($port, $name) = @_;
    my $c = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                  PeerPort => $port, Timeout => 2)
        or return ();
    syswrite $c, resp('SENTINEL', 'get-master-addr-by-name', $name);
    my $sel = IO::Select->new($c);
    my ($buf, @reply) = ('');
    while (!@reply && $sel->can_read(2)) {
        sysread($c, my $chunk, 4096) or last;
        $buf .= $chunk;
        # (an array of two bulk strings, read as a command is)
        @reply = take_command(\$buf);
    }
    close $c;
    return @reply == 2 ? @reply : ();
}

sub _answer {
    my ($self, $name) = @_;
    my $follow = _slurp("$self->{file}.follow");
    if (defined $follow) {
        my @named = _ask($follow, $name // 'lgmaster');
        return resp(@named) if @named;
    }
    return resp('127.0.0.1', _slurp("$self->{file}.master"));
}

sub _serve {
    my ($self, $srv, %o) = @_;
    my $file = $self->{file};
    $SIG{PIPE} = 'IGNORE';
    my $sel = IO::Select->new($srv);
    # %held: a connection's queries kept back, [its socket, how many]
    my (%buf, %sub, %held);
    while (1) {
        if (%held && -e "$file.hold") {
            my $answer = $self->_answer;
            syswrite $_->[0], $answer x $_->[1] for values %held;
            %held = ();
        }
        my $say = %sub ? _slurp("$file.say") : undef;
        if (defined $say) {
            unlink "$file.say";
            syswrite $_, resp('pmessage', '+switch-master', '+switch-master',
                              $say) for values %sub;
        }
        for my $fh ($sel->can_read(0.05)) {
            if ($fh == $srv) {
                my $c = $srv->accept or next;
                $sel->add($c);
                next;
            }
            my $n = sysread $fh, my $chunk, 4096;
            my $open = $n;
            $buf{$fh} .= $chunk if $n;
            while ($open && (my @cmd = take_command(\$buf{$fh}))) {
                my $c = uc $cmd[0];
                if ($c eq 'PSUBSCRIBE') {
                    open my $count, '>>', "$file.psubscribes" or die "$!";
                    print $count "1\n";
                    close $count;
                }
                if ($c eq 'SENTINEL' && $o{hold} && !-e "$file.hold") {
                    $held{$fh} //= [$fh, 0];
                    $held{$fh}[1]++;
                    _spew("$file.asked", '');
                } elsif ($c eq 'SENTINEL') {
                    syswrite $fh, $self->_answer($cmd[2]);
                } elsif ($c eq 'PSUBSCRIBE'
                         && ($o{subscribe} // '') eq 'refuse') {
                    syswrite $fh, "-NOPERM this user has no permissions to "
                        . "run the 'psubscribe' command\r\n";
                } elsif ($c eq 'PSUBSCRIBE' && $o{subscribe} && @cmd == 2) {
                    $sub{$fh} = $fh;
                    syswrite $fh, "*3\r\n\$10\r\npsubscribe\r\n\$"
                        . length($cmd[1]) . "\r\n$cmd[1]\r\n:1\r\n";
                } elsif ($c eq 'PING' && $sub{$fh}) {
                    syswrite $fh, resp('pong', $cmd[1] // '');
                } else {
                    $open = 0;
                }
            }
            next if $open;
            $sel->remove($fh);
            delete $buf{$fh};
            delete $sub{$fh};
            delete $held{$fh};
            close $fh;
        }
    }
}

1;
