package LG::Test;

# Small assertions shared by the test files.
#
#   my $body = answer_is($tx, 200, 'workspace created');
#   my $before = redis_dump($s->redis);  ...  is_deeply(redis_dump(...), $before)
#   my ($status, $headers, $body) = raw_http($port, $request_bytes);

use strict;
use warnings;

use Exporter 'import';
use IO::Socket::INET;
use Mojo::JSON qw(decode_json);
use Test::More;

our @EXPORT = qw(answer_is json_error_is redis_dump redis_values raw_http
                 timed);
# (not by default: several files still define their own)
our @EXPORT_OK = qw(eventually reads_as same_data public_dir http_body resp
                 burst_then lua_script take_command scored_before);

# Status, the headers every linegate answer carries, and a JSON body,
# which is returned (undef when it is not JSON).
sub answer_is {
    my ($tx, $status, $name) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;

    my $res = $tx->res;
    my $ok = is($res->code, $status, "$name: status $status");
    like($res->headers->header('X-Request-Id') // '', qr/^[0-9a-f]{32}$/,
         "$name: X-Request-Id");
    is($res->headers->content_type, 'application/json; charset=utf-8',
       "$name: Content-Type");

    my $body = eval { decode_json($res->body) };
    ok(ref $body eq 'HASH', "$name: a JSON object")
        or diag('body: ' . $res->body);
    diag('body: ' . $res->body) unless $ok;

    return $body;
}

# answer_is, then the error body {"error": ..., "code": ...}
sub json_error_is {
    my ($tx, $status, $code, $name, $error_re) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;

    my $body = answer_is($tx, $status, $name) // {};
    is($body->{code}, $code, "$name: code " . ($code // 'none'));
    like($body->{error} // '', $error_re // qr/./, "$name: error text");

    return $body;
}

# Every key and its value, type-aware: compare two dumps to prove that
# nothing was written.
sub redis_dump {
    my ($r) = @_;
    my %d;

    for my $k (sort $r->keys('*')) {
        my $t = $r->type($k);
        $d{$k} = $t eq 'string' ? [$t, $r->get($k)]
               : $t eq 'hash'   ? [$t, {$r->hgetall($k)}]
               : $t eq 'set'    ? [$t, [sort $r->smembers($k)]]
               : $t eq 'zset'   ? [$t, [$r->zrange($k, 0, -1, 'WITHSCORES')]]
               : $t eq 'list'   ? [$t, [$r->lrange($k, 0, -1)]]
               : $t eq 'stream' ? [$t, [map { _flat($_) }
                                        $r->xrange($k, '-', '+')]]
               : [$t];
    }

    return \%d;
}

sub _flat {
    my ($v) = @_;
    return ref $v eq 'ARRAY' ? map { _flat($_) } @$v
         : ref $v eq 'HASH'  ? map { ($_, _flat($v->{$_})) } sort keys %$v
         : defined $v        ? $v : ();
}

# every key name and every value in Redis, as one flat list of strings
sub redis_values {
    my ($r) = @_;
    my $d = redis_dump($r);
    return map { ($_, _flat($d->{$_})) } keys %$d;
}

# A request written byte for byte (chunked bodies, odd framing).
# Returns (status, {lowercase header => value}, body).
sub raw_http {
    my ($port, $bytes, $timeout) = @_;

    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port,
                                  Proto => 'tcp', Timeout => $timeout // 5)
        or die "connect: $!";
    $s->autoflush(1);
    print $s $bytes;

    local $/;
    local $SIG{ALRM} = sub { die "raw_http: timeout\n" };
    alarm($timeout // 5);
    my $res = <$s> // '';
    alarm 0;
    close $s;

    my ($head, $body) = split /\r\n\r\n/, $res, 2;
    my ($status_line, @h) = split /\r\n/, $head // '';
    my ($status) = ($status_line // '') =~ m{^HTTP/1\.\d (\d{3})};
    my %h = map { my ($k, $v) = split /:\s*/, $_, 2; (lc $k => $v) } @h;

    if (($h{'transfer-encoding'} // '') =~ /chunked/i) {
        my $plain = '';
        while ($body =~ s/^([0-9a-fA-F]+)\r\n//) {
            my $n = hex $1;
            last if $n == 0;
            $plain .= substr $body, 0, $n, '';
            $body =~ s/^\r\n//;
        }
        $body = $plain;
    }

    return ($status, \%h, $body);
}

# One answer's body from a kept-alive socket (an answer with a
# Content-Length), read unbuffered: what follows stays in the socket
sub http_body {
    my ($sock) = @_;
    my $buf = '';
    until ($buf =~ /\r\n\r\n/) {
        sysread($sock, $buf, 65536, length $buf) or die 'closed';
    }
    my ($len) = $buf =~ /^Content-Length: (\d+)/mi;
    die "no Content-Length:\n$buf" unless defined $len;
    my $head = index($buf, "\r\n\r\n") + 4;
    while (length($buf) < $head + $len) {
        sysread($sock, $buf, 65536, length $buf) or die 'closed';
    }
    return substr $buf, $head, $len;
}

# A Redis command in RESP, to write on a raw socket
sub resp {
    return join '', '*' . @_ . "\r\n",
                    map { '$' . length($_) . "\r\n$_\r\n" } @_;
}

# A command of the Redis protocol off the front of $$buf (an array of
# bulk strings, as hiredis writes), or () until it is whole
sub take_command {
    my ($buf) = @_;
    return () unless $$buf =~ /\A\*(\d+)\r\n/;
    my ($n, $at) = ($1, length $&);
    my @args;
    for (1 .. $n) {
        return () unless substr($$buf, $at) =~ /\A\$(\d+)\r\n/;
        my $len = $1;
        $at += length $&;
        return () if length($$buf) < $at + $len + 2;
        push @args, substr($$buf, $at, $len);
        $at += $len + 2;
    }
    substr($$buf, 0, $at) = '';
    return @args;
}

# A burst of invalidations, then at once a request: on the raw Redis
# socket $red one MULTI of HSET $key x $round for each of @$keys, then
# HSET $target @$set, EXEC; once EXEC is answered, $request written on
# the kept-alive $http socket (the very next thing sent); its body
sub burst_then {
    my ($red, $keys, $round, $target, $set, $http, $request) = @_;
    my $burst = resp('MULTI')
        . join('', map { resp('HSET', $_, 'x', $round) } @$keys)
        . resp('HSET', $target, @$set)
        . resp('EXEC');
    syswrite $red, $burst;
    # +OK, a +QUEUED per HSET, then EXEC's array: a line per HSET
    my $lines = 1 + 2 * (@$keys + 1) + 1;
    my $buf = '';
    while (($buf =~ tr/\n//) < $lines) {
        sysread($red, $buf, 1 << 20, length $buf) or die 'closed';
    }
    syswrite $http, $request;
    return http_body($http);
}

# run code, return (seconds it took, its result)
sub timed(&) {
    my ($code) = @_;
    my $t0 = Time::HiRes::time();
    my @r = $code->();
    return (Time::HiRes::time() - $t0, @r);
}

# poll $cond every 0.1 s for at most $timeout s; true when it held
sub eventually {
    my ($cond, $timeout) = @_;
    my $until = Time::HiRes::time() + $timeout;
    while (Time::HiRes::time() < $until) {
        return 1 if $cond->();
        Time::HiRes::sleep(0.1);
    }
    return $cond->();
}

use Time::HiRes ();

# A member of the sorted set $key that $want->($member) accepts, once
# its score (nginx's clock in ms when the member was written, as the
# fleet's journals and claims have it) is $ms or more before now: what a
# reconciliation run or a late claim then sees as older than $ms. Polled
# as eventually() does, for $timeout s at most; the member, or undef.
sub scored_before {
    my ($r, $key, $want, $ms, $timeout) = @_;
    my $found;
    eventually(sub {
        my %score = $r->zrange($key, 0, -1, 'WITHSCORES');
        my $now = Time::HiRes::time() * 1000;
        ($found) = grep { $want->($_) && $now - $score{$_} >= $ms }
                   sort keys %score;
        return defined $found;
    }, $timeout);
    return $found;
}

# two Perl data structures alike (compared as canonical JSON)
sub same_data {
    my ($a, $b) = @_;
    require JSON::PP;
    my $json = JSON::PP->new->canonical;
    return $json->encode($a) eq $json->encode($b);
}

# $read->() again until it is alike $want or $timeout s pass: the last
# read, for is_deeply's report (a server's write sent after its answer
# lands a moment later)
sub reads_as {
    my ($read, $want, $timeout) = @_;
    my $got;
    eventually(sub { same_data($got = $read->(), $want) }, $timeout);
    return $got;
}

# A directory nginx's workers (nobody) may serve from, removed at exit:
# public_dir('file.txt' => "ok\n", ...), its files world-readable
sub public_dir {
    my (%files) = @_;
    require File::Temp;
    my $dir = File::Temp::tempdir(CLEANUP => 1);
    chmod 0755, $dir;
    for my $name (sort keys %files) {
        open my $fh, '>', "$dir/$name" or die "$dir/$name: $!";
        print $fh $files{$name};
        close $fh;
        chmod 0644, "$dir/$name";
    }
    return $dir;
}

# The source of src/lua/<name>.lua with its --#include lines pasted, as
# src/lua/embed.pl builds what the module embeds (an include may include
# another: lr_gate pastes rl_gcra), for tests that EVAL a script straight
sub lua_script {
    my ($name) = @_;
    require LG::Stack;
    my $slurp = sub {
        open my $fh, '<', $_[0] or die "$_[0]: $!";
        local $/;
        return <$fh>;
    };
    my $src = $slurp->("$LG::Stack::ROOT/src/lua/$name.lua");
    1 while $src =~ s{^--#include ([a-z0-9_]+)[ \t]*$}{
        $slurp->("$LG::Stack::ROOT/src/lua/include/$1.lua")
    }gme;
    return $src;
}

1;
