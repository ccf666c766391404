package LG::RedisCluster;

# A small Redis Cluster client for the tests, over Redis.pm: what
# $s->redis is on a cluster (LG::Stack, redis => 'cluster'), so that tests
# which read and write keys directly work unchanged.
#
#   my $r = LG::RedisCluster->new(ports => [7000, 7001, 7002]);
#   $r->set('lg:rl:{z:h:ab}', 1);          # to the master of the key's slot
#   my @k = $r->keys('lg:rl:*');       # the union over the masters
#
# Any command is sent to the master of its key's slot (the first argument;
# EVAL and EVALSHA: the first key after numkeys; no key: the first
# master). MOVED refreshes the slot map and retries, ASK sends ASKING to
# the node named and retries there once; a node that does not answer,
# CLUSTERDOWN and TRYAGAIN refresh the map and retry, for at most
# `retry_for` seconds (default 10: a failover takes a few). Commands of
# the whole keyspace go to every master: KEYS (the union), FLUSHALL,
# FLUSHDB, SCRIPT FLUSH, CONFIG RESETSTAT, CLIENT PAUSE and UNPAUSE (a
# test that pauses "Redis" means every master), DBSIZE (the sum) and INFO (a
# hash whose numbers are the sums over the masters, also the numbers of
# "calls=3,usec=12" fields of commandstats; other fields the first
# master's). A command with an undef argument dies, not sent (LG::Redis).

use strict;
use warnings;

use Carp qw(croak);
use LG::Redis;
# not imported: this package's methods are Redis commands ($r->time is
# Redis's TIME, not Time::HiRes's)
use Time::HiRes ();

our $AUTOLOAD;

my @CRC16 = map {
    my $c = $_ << 8;
    for (1 .. 8) { $c = ($c & 0x8000) ? (($c << 1) ^ 0x1021) : ($c << 1) }
    $c & 0xffff;
} 0 .. 255;

# Redis Cluster's hash slot of a key: CRC16 (XMODEM) of the key, or of
# its hash tag (the part between the first "{" and the next "}" when not
# empty), modulo 16384
sub keyslot {
    my $key = pop;    # keyslot($k), or as a method
    if ((my $open = index $key, '{') >= 0) {
        my $close = index $key, '}', $open + 1;
        $key = substr $key, $open + 1, $close - $open - 1
            if $close > $open + 1;
    }
    my $crc = 0;
    for my $b (unpack 'C*', $key) {
        $crc = (($crc << 8) & 0xff00) ^ $CRC16[(($crc >> 8) ^ $b) & 0xff];
    }
    return $crc & 0x3fff;
}

sub new {
    my ($class, %opts) = @_;
    my $self = bless {
        ports     => [@{ $opts{ports} or croak 'ports => [...] needed' }],
        retry_for => $opts{retry_for} // 10,
        conn      => {},
        slots     => [],     # [start, end, master port, replica ports]
    }, $class;
    $self->refresh;
    return $self;
}

sub _conn {
    my ($self, $port) = @_;
    return $self->{conn}{$port} //= LG::Redis->new(
        server => "127.0.0.1:$port", reconnect => 0,
        cnx_timeout => 1, read_timeout => 5, write_timeout => 5);
}

sub _drop {
    my ($self, $port) = @_;
    my $c = delete $self->{conn}{$port} or return;
    eval { $c->quit };
}

# The slot map from CLUSTER SLOTS of the first node that answers with
# every slot served; 1 when so. The ports known grow with the map's.
sub refresh {
    my ($self) = @_;
    my %known = map { $_ => 1 } @{ $self->{ports} };
    for my $port (@{ $self->{ports} }) {
        my $slots = eval { $self->_conn($port)->cluster('slots') };
        if (!$slots) { $self->_drop($port); next }
        my @map = sort { $a->[0] <=> $b->[0] } map {
            my ($from, $to, $m, @r) = @$_;
            [$from, $to, $m->[1], [map { $_->[1] } @r]];
        } @$slots;
        my $covered = 0;
        $covered += $_->[1] - $_->[0] + 1 for @map;
        next unless $covered == 16384;
        $self->{slots} = \@map;
        for my $p (map { ($_->[2], @{ $_->[3] }) } @map) {
            push @{ $self->{ports} }, $p unless $known{$p}++;
        }
        return 1;
    }
    return 0;
}

# the slot map: a list of [first slot, last slot, master, [replicas]]
sub slots { return @{ $_[0]{slots} } }

# the ports of the masters serving slots, in port order
sub masters {
    my ($self) = @_;
    my %m = map { $_->[2] => 1 } @{ $self->{slots} };
    return sort { $a <=> $b } keys %m;
}

# the port of the master serving $slot (by the map last read)
sub master_of_slot {
    my ($self, $slot) = @_;
    for (@{ $self->{slots} }) {
        return $_->[2] if $slot >= $_->[0] && $slot <= $_->[1];
    }
    return undef;
}

sub master_of { my ($self, $key) = @_; $self->master_of_slot(keyslot($key)) }

# the key a command is routed by
sub _key_of {
    my ($cmd, @args) = @_;
    return $args[2] if $cmd =~ /^eval(?:sha)?(?:_ro)?$/i && ($args[1] // 0) > 0;
    return undef if $cmd =~ /^eval/i;
    return $args[0];
}

my %ALL = map { $_ => 1 }
    qw(keys flushall flushdb script_flush config_resetstat dbsize info
       client_pause client_unpause);

sub AUTOLOAD {
    my $self = shift;
    (my $cmd = $AUTOLOAD) =~ s/.*:://;
    return if $cmd eq 'DESTROY';
    # here, not only in LG::Redis: the error names the caller's line
    LG::Redis::check_args($cmd, @_);
    return $self->_all($cmd, @_) if $ALL{lc $cmd};
    return $self->_all($cmd, @_)
        if lc $cmd eq 'client' && ($_[0] // '') =~ /^(?:UN)?PAUSE$/i;
    return $self->_routed($cmd, @_);
}

sub _routed {
    my ($self, $cmd, @args) = @_;
    my $want = wantarray;
    my $key = _key_of($cmd, @args);
    my $until = Time::HiRes::time() + $self->{retry_for};
    my ($port, $asking);

    while (1) {
        $port //= defined $key ? $self->master_of($key)
                               : ($self->masters)[0];
        if (!defined $port) {
            croak "[$cmd] no master known for its slot"
                if Time::HiRes::time() > $until;
            Time::HiRes::sleep(0.1);
            $self->refresh;
            next;
        }
        my @r;
        my $ok = eval {
            my $c = $self->_conn($port);
            $c->asking if $asking;
            @r = $want ? $c->$cmd(@args) : scalar $c->$cmd(@args);
            1;
        };
        return $want ? @r : $r[0] if $ok;

        my $err = $@;
        $asking = 0;
        die $err if Time::HiRes::time() > $until;
        if ($err =~ /\] MOVED \d+ [\d.]+:(\d+)/) {
            $self->refresh;
            $port = $1;
            next;
        }
        if ($err =~ /\] ASK \d+ [\d.]+:(\d+)/) {
            ($port, $asking) = ($1, 1);
            next;
        }
        my $down = $err =~ /\] (?:CLUSTERDOWN|TRYAGAIN)/;
        my $gone = $err =~ /Could not (?:connect|write)|Not connected/
                   || $err =~ /Error while reading|closed connection/;
        die $err unless $down || $gone;
        $self->_drop($port) if $gone;
        Time::HiRes::sleep(0.1);
        $self->refresh;
        undef $port;
    }
}

sub _all {
    my ($self, $cmd, @args) = @_;
    my @masters = $self->masters;
    my $lc = lc $cmd;

    if ($lc eq 'keys') {
        my %k = map { $_ => 1 }
                map { $self->_on($_, keys => @args) } @masters;
        my @keys = sort keys %k;
        return wantarray ? @keys : scalar @keys;    # as Redis.pm
    }
    if ($lc eq 'dbsize') {
        my $n = 0;
        $n += scalar $self->_on($_, dbsize => @args) for @masters;
        return $n;
    }
    if ($lc eq 'info') {
        my %sum;
        for my $i (map { scalar $self->_on($_, info => @args) } @masters) {
            for my $f (keys %$i) {
                $sum{$f} = _add($sum{$f}, $i->{$f});
            }
        }
        return \%sum;
    }
    my $r;
    $r = $self->_on($_, $cmd => @args) for @masters;
    return $r;
}

# a number plus a number; "calls=1,usec=2" plus "calls=3,usec=4" field by
# field; anything else: the first value
sub _add {
    my ($a, $b) = @_;
    return $b unless defined $a;
    return $a + $b if $a =~ /^\d+$/ && $b =~ /^\d+$/;
    my %b = $b =~ /(\w+)=(\d+(?:\.\d+)?)(?:,|$)/g;
    return $a unless %b && $a =~ /^(?:\w+=[\d.]+,?)+$/;
    $a =~ s/(\w+)=(\d+(?:\.\d+)?)/"$1=" . ($2 + ($b{$1} \/\/ 0))/ge;
    return $a;
}

# $cmd on the node $port, a dead connection retried once
sub _on {
    my ($self, $port, $cmd, @args) = @_;
    my @r = eval { $self->_conn($port)->$cmd(@args) };
    if ($@) {
        die $@ unless $@ =~ /Error while reading|closed connection/
                      || $@ =~ /Not connected|Could not write/;
        $self->_drop($port);
        @r = $self->_conn($port)->$cmd(@args);
    }
    return wantarray ? @r : $r[0];
}

# the connection to one node, for commands of that node only
sub node { my ($self, $port) = @_; return $self->_conn($port) }

sub quit {
    my ($self) = @_;
    $self->_drop($_) for keys %{ $self->{conn} };
    return 1;
}

1;
