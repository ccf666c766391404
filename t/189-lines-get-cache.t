# linegate_lines_cache for GET /api/line-requests/:id: a worker keeps
# the hash of a line request it read tracked (CLIENT TRACKING ... REDIRECT
# <subscriber> OPTIN, CLIENT CACHING yes, HGETALL in the GET's one
# write), and answers a later GET from it, when the workspace's rate
# lease admitted that GET (nothing else to ask Redis), once the
# subscriber's barrier PING is answered: every invalidation of a write
# finished before the GET is handled by then. The HGETALL count of INFO
# commandstats tells a hit from a read.
#
# What a cache must never do is answer what a completed write changed:
# every write below is followed by the very next GET, from either
# worker, with no sleep and no retry between them.
use strict;
use warnings;
use lib 't/lib';

use Test::More;

use IO::Socket::INET;
use Mojo::JSON qw(decode_json);
use Mojo::Promise;
use Mojo::UserAgent;
use Time::HiRes qw(sleep time);
use LG::Stack;
use LG::Test qw(eventually http_body burst_then);
use LG::Lines;

# the cache on, and a lease of the workspace's rate long enough that a
# GET asks Redis for nothing but its hash
my $s = LG::Stack->new(LINES_CACHE => '16m',
                       WS_RATE => '6000000r/m lease=1s');

plan skip_all => 'no Lines API cache on a Redis Cluster'
    if $s->topology eq 'cluster';

$s->start;
my $l = LG::Lines->new($s);
my $r = $s->redis;
my $n = 0;

sub ws { return $l->workspace('org_gc' . ++$n, @_) }

sub calls {
    my ($cmd) = @_;
    my $v = $r->info('commandstats')->{"cmdstat_$cmd"} // '';
    return $v =~ /\bcalls=(\d+)/ ? $1 : 0;
}

# GET over $ua (the stack's kept-alive connection: one worker), and the
# HGETALLs Redis ran meanwhile
sub get {
    my ($w, $id, $ua) = @_;
    $ua //= $s->ua;
    my $before = calls('hgetall');
    my $tx = $ua->get($s->url("/api/line-requests/$id")
                      => {Authorization => "Bearer $w->{key}"});
    return (calls('hgetall') - $before, $tx);
}

sub line_of {
    my ($tx) = @_;
    my $b = eval { decode_json($tx->res->body) } // {};
    return $b->{line} // {};
}

# the subscribers (revocations and invalidations) of both workers
sub subscribers {
    my $list = eval { $r->client('list') } // '';
    return map { /\bid=(\d+)/ ? $1 : () }
           grep { /\bsub=1\b/ && /\bpsub=1\b/ } split /\n/, $list;
}

sub wait_subscribed {
    eventually(sub { subscribers() == 2 }, 10) or return 0;
    sleep 0.5;
    return 1;
}

# GETs over $ua until one costs no HGETALL: the hash is kept by that
# worker (its first GETs resolve the key, take a lease, fill)
sub warm {
    my ($w, $id, $name, $ua) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    my ($h, $tx);
    for (1 .. 8) {
        ($h, $tx) = get($w, $id, $ua);
        last if !$h && $tx->res->code == 200;
    }
    is($tx->res->code, 200, "$name: 200");
    is($h, 0, "$name: answered from the table (no HGETALL)");
    return $tx;
}

# four kept-alive connections (the kernel hands them to either worker)
sub connections {
    return map { Mojo::UserAgent->new(request_timeout => 10) } 1 .. 4;
}

ok(wait_subscribed(), 'both workers subscribed');

subtest 'hits: the hash kept, no HGETALL' => sub {
    my $w = ws();
    my $id = $l->created($w, firstName => 'One');
    my ($aw) = $l->awaiting($w, firstName => 'Two');

    my $caching = calls('client|caching');
    my ($h, $first) = get($w, $id);
    my $b = $l->answer($first, 200, 'the first GET');
    is($b->{line}{firstName}, 'One', 'its line');
    get($w, $id) for 1 .. 3;
    cmp_ok(calls('client|caching') - $caching, '>=', 1,
           'CLIENT CACHING yes sent before a read');

    # the fill's HGETALL right after CLIENT CACHING yes on its connection
    my $tx = warm($w, $id, 'kept');
    is($tx->res->body, $first->res->body, 'the same bytes');

    my ($cmds) = $s->redis_traffic(sub { ($h, $tx) = get($w, $id) });
    is($tx->res->body, $first->res->body, 'the measured hit: same bytes');
    is(scalar(grep { !/"EVALSHA"|"SET"/i } @$cmds), 0,
       'the hit: no command but a lease\'s') or diag "@$cmds";

    # (a GET whose lease is spent asks Redis for the rate, and reads the
    # hash in the same write)
    my $hits = 0;
    for (1 .. 10) {
        my ($c, $t) = get($w, $id);
        $hits++ unless $c;
        is($t->res->body, $first->res->body, "GET $_: the same bytes");
    }
    cmp_ok($hits, '>=', 5, "10 more GETs: $hits without HGETALL");

    # the metrics count the hits and the reads
    my $m = $s->ua->get($s->url('/metrics'))->res->body;
    my %c = $m =~ /^linegate_cache_requests_total
                   \{cache="line_request",result="(\w+)"\}\ (\d+)/mxg;
    my ($hit, $miss) = @c{qw(hit miss)};
    cmp_ok($hit // 0, '>=', 5, 'metrics: line_request hits counted');
    cmp_ok($miss // 0, '>=', 1, 'metrics: line_request misses counted');

    # an add-on awaiting payment: kept too, its payment link answered
    warm($w, $aw, 'awaiting payment');
    ($h, $tx) = get($w, $aw);
    is(line_of($tx)->{provisioningStatus}, 'awaiting_payment',
       'awaiting payment, from the table');
    ok(($l->answer($tx, 200, 'awaiting')->{paymentUrl} // '') ne '',
       'its payment link');

    # an unknown id: 404, not kept
    my $none = 'f' x 24;
    for (1 .. 3) {
        my ($c, $t) = get($w, $none);
        is($t->res->code, 404, "unknown $_: 404");
        is($c, 1, "unknown $_: read each time");
    }
};

subtest 'every writer is seen by the very next GET, on any connection'
    => sub {
    my $w = ws();
    my $id = $l->created($w, firstName => 'Alpha');
    my $key = "lg:{ws:$w->{id}}:lr:$id";
    my @ua = connections();

    # (a worker reads the hash again once: its other connections may
    # then be served the new hash from its table)
    my $step = sub {
        my ($name, $write, $check) = @_;
        warm($w, $id, "$name, before ($_)", $ua[$_]) for 0 .. $#ua;
        $write->();
        my $reads = 0;
        for my $i (0 .. $#ua) {
            my ($h, $tx) = get($w, $id, $ua[$i]);
            $check->($tx, "$name ($i)");
            $reads += $h;
        }
        cmp_ok($reads, '>', 0, "$name: read again from Redis");
    };

    $step->('the operator\'s health report', sub {
        $s->op(POST => "/lines/$id/health", {status => 'unhealthy'});
    }, sub {
        is(line_of($_[0])->{healthCheck}{status}, 'unhealthy', $_[1]);
    });

    $step->('usage', sub {
        $s->op(POST => "/lines/$id/usage",
               {newConversations => 2, totalMessages => 5});
    }, sub {
        is(line_of($_[0])->{usage}{totalMessagesCount}, 5, $_[1]);
    });

    $step->('an outside HSET', sub {
        $r->hset($key, firstName => 'Zed');
    }, sub {
        is(line_of($_[0])->{firstName}, 'Zed', $_[1]);
    });

    # a cancel through the API (the other kind of writer: a script)
    my ($aw) = $l->awaiting($w, firstName => 'Bravo');
    warm($w, $aw, "before the cancel ($_)", $ua[$_]) for 0 .. $#ua;
    $l->answer($l->manage($w, $aw, 'cancel'), 200, 'canceled');
    for my $i (0 .. $#ua) {
        my ($h, $tx) = get($w, $aw, $ua[$i]);
        is(line_of($tx)->{provisioningStatus}, 'canceled',
           "canceled: seen at once ($i)");
    }

    # the hash gone: 404 at once
    warm($w, $id, "before the DEL ($_)", $ua[$_]) for 0 .. $#ua;
    $r->del($key);
    for my $i (0 .. $#ua) {
        my ($h, $tx) = get($w, $id, $ua[$i]);
        is($tx->res->code, 404, "deleted: 404 at once ($i)");
    }
};

# Writers and readers at once: after each write completes, 8 GETs at
# once over 8 connections (both workers) must all see it
subtest 'a race: 40 writes, 8 readers after each' => sub {
    my $w = ws();
    my $id = $l->created($w, firstName => 'v0');
    my $key = "lg:{ws:$w->{id}}:lr:$id";
    my @ua = map { Mojo::UserAgent->new(request_timeout => 10) } 1 .. 8;
    warm($w, $id, "reader $_", $ua[$_]) for 0 .. 7;

    my ($stale, $hits, $bad) = (0, 0, 0);
    for my $v (1 .. 40) {
        $r->hset($key, firstName => "v$v");
        my @p = map {
            my $ua = $_;
            $ua->get_p($s->url("/api/line-requests/$id")
                       => {Authorization => "Bearer $w->{key}"})
        } @ua;
        my @tx;
        Mojo::Promise->all(@p)->then(sub { @tx = map { $_->[0] } @_ })
                              ->wait;
        for my $tx (@tx) {
            $bad++ unless $tx->res->code == 200;
            $stale++ unless (line_of($tx)->{firstName} // '') eq "v$v";
        }
        # a few GETs between writes: served from the table again
        my ($h) = get($w, $id, $ua[0]);
        get($w, $id, $ua[0]) for 1 .. 2;
        ($h) = get($w, $id, $ua[0]);
        $hits++ unless $h;
    }
    is($bad, 0, 'every GET answered 200');
    is($stale, 0, 'no GET answered a write\'s old value');
    cmp_ok($hits, '>', 20, "kept again between writes ($hits of 40)");
};

# Thousands of the worker's hashes written in one MULTI, the target's
# last: the subscriber's socket holds more invalidations than one read
# takes; the GET sent right after EXEC's answer must still see the write
# (the barrier's PONG comes after every invalidation)
subtest 'a burst of invalidations: a completed write still seen' => sub {
    my $w = ws();
    my $target = $l->created($w, firstName => 'Tee');
    my $tkey = "lg:{ws:$w->{id}}:lr:$target";
    my %tpl = $r->hgetall($tkey);
    my @ids;
    for my $i (1 .. 6000) {
        push @ids, sprintf '%024x', 0xb0000000 + $i;
        $r->hset("lg:{ws:$w->{id}}:lr:$ids[-1]", %tpl, firstName => "B$i",
                 sub {});
        $r->wait_all_responses unless $i % 500;
    }
    $r->wait_all_responses;

    my $http = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                      PeerPort => $s->port) or die $!;
    my $red = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                     PeerPort => $s->redis_port) or die $!;
    my $req = sub {
        return "GET /api/line-requests/$_[0] HTTP/1.1\r\nHost: lg\r\n"
             . "Authorization: Bearer $w->{key}\r\n\r\n";
    };
    my $answer = sub { http_body($http) };
    my $get = sub { syswrite $http, $req->($_[0]); return $answer->() };
    my $name = sub {
        my $b = eval { decode_json($_[0]) } // {};
        return ($b->{line} // {})->{firstName} // "?$_[0]";
    };

    my @stale;
    for my $round (1 .. 3) {
        $get->($_) for @ids;    # each GET a tracked read (or a hit)
        my $before = calls('hgetall');
        $get->($target) for 1 .. 3;
        my $h = calls('hgetall') - $before;
        cmp_ok($h, '<', 3, "round $round: the target from the table");

        my $got = $name->(burst_then(
            $red, [map { "lg:{ws:$w->{id}}:lr:$_" } @ids], $round, $tkey,
            [firstName => "Burst$round"], $http, $req->($target)));
        push @stale, "round $round: $got" if $got ne "Burst$round";
    }
    is_deeply(\@stale, [], 'every GET sent after EXEC shows the write');
    close $http;
    close $red;
    $r->del(map { "lg:{ws:$w->{id}}:lr:$_" } @ids);
};

subtest 'the subscriber killed: read from Redis until subscribed again'
    => sub {
    my $w = ws();
    my $id = $l->created($w, firstName => 'Kim');
    my $key = "lg:{ws:$w->{id}}:lr:$id";
    warm($w, $id, 'before the kill');

    my $killed = 0;
    $killed += $r->client('kill', 'id', $_) for subscribers();
    is($killed, 2, 'both subscribers killed');

    # no invalidation reaches the worker now: nothing from the table
    $r->hset($key, firstName => 'Lou');
    my ($h, $tx) = get($w, $id);
    is(line_of($tx)->{firstName}, 'Lou', 'written while unsubscribed: seen');
    is($h, 1, 'read from Redis');

    ok(wait_subscribed(), 'subscribed again') or return;
    $tx = warm($w, $id, 'subscribed again');
    is(line_of($tx)->{firstName}, 'Lou', 'kept again: Lou');
    $r->hset($key, firstName => 'Max');
    ($h, $tx) = get($w, $id);
    is(line_of($tx)->{firstName}, 'Max', 'then a write: seen at once');
};

# Tracking refused after the subscriber's probe (an ACL changed under a
# running worker): the tracked read fails, the GET is read again plain
# (the lease admitted it: counted once), answered right
subtest 'a tracked read refused: read again plain, counted once' => sub {
    my $w = ws();
    my $id = $l->created($w, firstName => 'Ray');
    my $other = $l->created($w, firstName => 'Sue');
    get($w, $id) for 1 .. 3;     # the key resolved, a lease taken
    my $off = length $s->error_log;

    $r->acl('setuser', 'default', '-client|tracking');
    my ($h, $tx, $cmds);
    my $ok = eval {
        ($cmds) = $s->redis_traffic(sub { ($h, $tx) = get($w, $other) });
        1;
    };
    $r->acl('setuser', 'default', '+client|tracking');
    ok($ok, 'asked');
    is($h, 2, 'the tracked read, then the plain one') or diag "@$cmds";
    is(scalar(grep { /"EVALSHA"|"SET"/i } @$cmds), 0,
       'no script, no rate decision: the request counted once (its lease)')
        or diag "@$cmds";
    is($tx->res->code, 200, 'refused: 200');
    is(line_of($tx)->{firstName}, 'Sue', 'refused: the right line');
    like(substr($s->error_log, $off), qr/NOPERM|client\|tracking/i,
         'the refusal logged');
    ($h, $tx) = get($w, $other);
    is(line_of($tx)->{firstName}, 'Sue', 'after: right');
    warm($w, $other, 'tracking allowed again');
};

subtest 'off: every GET reads its hash' => sub {
    my $o = LG::Stack->new(WS_RATE => '6000000r/m lease=1s')->start;
    my $ol = LG::Lines->new($o);
    my $w = $ol->workspace('org_gc_off');
    my $id = $ol->created($w, firstName => 'Off');
    my $or = $o->redis;
    my $c = sub {
        my $v = $or->info('commandstats')->{cmdstat_hgetall} // '';
        return $v =~ /\bcalls=(\d+)/ ? $1 : 0;
    };
    $ol->get($w, $id) for 1 .. 3;
    my $before = $c->();
    is($ol->get($w, $id)->res->code, 200, 'GET') for 1 .. 5;
    is($c->() - $before, 5, '5 GETs, 5 HGETALL');
    my $t = $or->info('commandstats')->{'cmdstat_client|caching'} // '';
    is($t, '', 'no CLIENT CACHING sent');
    $o->stop;
};

done_testing;
