# A GET whose API-key cache entry has expired checks the key in its
# pipeline (t/185): the key's lookup lg:apikey:<digest>, the workspace's
# keys, its rate (rl_gcra, or the idle SET) and the hash or the index. On
# a cluster the lookup is on its own slot, often on another master than
# the workspace: that master can fail (BUSY, LOADING, down) while the
# workspace's admits. The request then answers an error, and is not
# charged: the admission is given back (rl_refund, as linegate_limit does
# for a zone when another has no decision), and with lease= the rest of
# the grant stays the worker's next lease. Before, the pipeline's failure
# dropped the rate's answer: every such request (every client retry of
# its 503) took one of the workspace's admissions, with lease= all of the
# grant's.
use strict;
use warnings;
use lib 't/lib';

use Test::More;
use Time::HiRes qw(sleep);
use Digest::SHA qw(sha256_hex);
use IO::Socket::INET;
use Mojo::UserAgent;
use LG::Stack;
use LG::Lines;

my $CLUSTER = ($ENV{LG_REDIS} // '') eq 'cluster';

# the stack's rate, 100000 a minute: T = 600 us per admission
my $T = 600;

sub setup {
    my (%opt) = @_;
    my $s = LG::Stack->new(%opt)->start;
    my $l = LG::Lines->new($s);
    my $w = $l->workspace('org_rv_failed');
    my $id = $l->created($w);
    return ($s, $l, $w, $id);
}

# a new key of $w whose lookup is on another master than the workspace
# (any key off a cluster)
sub far_key {
    my ($s, $w) = @_;
    for (1 .. 50) {
        my $k = $s->op(POST => "/workspaces/$w->{id}/keys")->res->json;
        $k->{digest} = sha256_hex($k->{key});
        return $k if $s->topology ne 'cluster'
            || $s->masters_of("lg:apikey:$k->{digest}",
                              "lg:{ws:$w->{id}}") == 2;
    }
    die 'no key with its lookup on another master';
}

# one kept-alive connection: one worker, which learns the key
sub reader {
    my ($s, $k) = @_;
    my $ua = Mojo::UserAgent->new;
    return sub {
        my ($path) = @_;
        return $ua->get($s->url($path)
                        => {Authorization => "Bearer $k->{key}"});
    };
}

sub gcra_key { return "lg:{ws:$_[0]{id}}:gcra" }

# the workspace's TAT 10 s ahead: nothing expires or refills meanwhile,
# and a worker's lease decision does not take the idle path
sub tat_ahead {
    my ($s, $w) = @_;
    my $r = $s->redis;
    my ($sec, $usec) = $r->time;
    my $tat = $sec * 1_000_000 + $usec + 10_000_000;
    $r->set(gcra_key($w), $tat, 'PX', 70_000);
    return $tat;
}

# a broken key (WRONGTYPE, no retry changes it): 500, as the lookup's
# own step answers it
sub failed_ok {
    my ($tx, $name) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    is($tx->res->code, 500, "$name: 500") or diag $tx->res->body;
    is_deeply($tx->res->json,
              {error => 'Internal error', code => 'INTERNAL_ERROR'},
              "$name: the API's error body") or diag $tx->res->body;
}

# $code with lg:apikey:<digest> a hash: its GET answers WRONGTYPE, on
# its master only
sub lookup_broken {
    my ($s, $k, $code) = @_;
    my $r = $s->redis;
    my $key = "lg:apikey:$k->{digest}";
    my $ws = $r->get($key);
    $r->del($key);
    $r->hset($key, 'broken', 1);
    my @res = eval { $code->() };
    my $err = $@;
    $r->del($key);
    $r->set($key, $ws);
    die $err if $err;
    return @res;
}

sub resp {
    return join '', '*' . scalar(@_) . "\r\n",
                    map { '$' . length($_) . "\r\n$_\r\n" } @_;
}

# $code while the master of $key runs a script of another client: past
# lua-time-limit it answers every other command -BUSY
sub master_busy {
    my ($s, $key, $code) = @_;
    my $port = $s->cluster_master_of($key);
    my $node = $s->redis->node($port);
    $node->config_set('lua-time-limit', 50);
    my $long = IO::Socket::INET->new("127.0.0.1:$port")
        or die "connect: $!";
    print $long resp('EVAL', 'local i = 0 while true do i = i + 1 end', 0);
    sleep 0.2;
    my @res = eval { $code->() };
    my $err = $@;
    my $killer = IO::Socket::INET->new("127.0.0.1:$port")
        or die "connect: $!";
    print $killer resp('SCRIPT', 'KILL');
    my $ok = <$killer>;
    <$long>;
    $node->config_set('lua-time-limit', 5000);
    die $err if $err;
    die "SCRIPT KILL: $ok" unless ($ok // '') =~ /^\+OK/;
    return @res;
}

my ($s, $l, $w, $id) = setup();
my $r = $s->redis;

subtest 'the lookup answers an error: the admission given back' => sub {
    my $k = far_key($s, $w);
    my $get = reader($s, $k);

    for my $path ("/api/line-requests/$id", '/api/lines/by-user') {
        is($get->($path)->res->code, 200, "$path: the key learned");
        sleep 0.6;    # past linegate_api_key_cache (500ms)

        my $before = tat_ahead($s, $w);
        my ($tx) = lookup_broken($s, $k, sub { $get->($path) });
        failed_ok($tx, "$path: WRONGTYPE");
        is($r->get(gcra_key($w)), $before,
           "$path: the workspace's admission given back");

        # the lookup whole again: the next read is charged once
        $tx = $get->($path);
        is($tx->res->code, 200, "$path: then answered");
        is($r->get(gcra_key($w)), $before + $T, "$path: charged once");
    }
};

SKIP: {
    skip 'the lookup\'s master failing alone needs a cluster (LG_REDIS='
         . 'cluster): one Redis busy answers the rate part too', 1
        unless $CLUSTER;

    subtest 'the lookup\'s master busy: 503, not charged' => sub {
        my $k = far_key($s, $w);
        my $get = reader($s, $k);

        for my $path ("/api/line-requests/$id", '/api/lines/by-user') {
            is($get->($path)->res->code, 200, "$path: the key learned");
            sleep 0.6;

            my $before = tat_ahead($s, $w);
            my @tx = master_busy($s, "lg:apikey:$k->{digest}", sub {
                map { $get->($path) } 1 .. 3;
            });
            for my $i (0 .. $#tx) {
                is($tx[$i]->res->code, 503, "$path: BUSY: 503 ($i)");
                is(($tx[$i]->res->json // {})->{code}, 'STORE_UNAVAILABLE',
                   "$path: BUSY: STORE_UNAVAILABLE ($i)");
            }
            is($r->get(gcra_key($w)), $before,
               "$path: 3 retries, the workspace's admissions given back");

            my $tx = $get->($path);
            is($tx->res->code, 200, "$path: the master back: answered");
            is($r->get(gcra_key($w)), $before + $T, "$path: charged once");
        }

        # no answer within linegate_redis_command_timeout (1 s): the
        # workspace's master answered, its admission is given back
        my $path = "/api/line-requests/$id";
        sleep 0.6;
        my $before = tat_ahead($s, $w);
        my $node = $r->node($s->cluster_master_of("lg:apikey:$k->{digest}"));
        $node->client('PAUSE', 3000);
        my $tx = $get->($path);
        $node->client('UNPAUSE');
        is($tx->res->code, 503, 'the lookup\'s master paused: 503');
        is(($tx->res->json // {})->{code}, 'STORE_UNAVAILABLE',
           'paused: STORE_UNAVAILABLE');
        is($r->get(gcra_key($w)), $before,
           'paused: the workspace\'s admission given back');
        is($get->($path)->res->code, 200, 'the master back: answered');
        is($r->get(gcra_key($w)), $before + $T, 'charged once');
    };
}

$s->stop;

# with lease=: a decision's grant beyond the request is the worker's
# next lease, this request's admission is given back. rl_gcra's want
# (ARGV[3], 1 when absent) read from the traffic; a request the lease
# admitted (no decision: want 0) gives one back: TAT + (want - 1) T.
subtest 'lease=: the request\'s admission back, the grant kept' => sub {
    my ($s, $l, $w, $id) = setup(WS_RATE => '100000r/m lease=1s',
                                 HTTP_EXTRA => 'linegate_api_key_cache 50ms;');
    my $r = $s->redis;
    my $k = far_key($s, $w);
    my $get = reader($s, $k);
    my $path = "/api/line-requests/$id";
    my $gcra = gcra_key($w);

    # 0.1 s: the entry expired, the lease admits; 1.1 s: the lease is
    # over, the request asks for the next one
    for my $case ([0.1, 'the lease admits it'], [1.1, 'a decision']) {
        my ($pause, $name) = @$case;
        tat_ahead($s, $w);
        is(scalar(grep { $get->($path)->res->code == 200 } 1 .. 30), 30,
           "$name: 30 reads, the lease grows");
        sleep $pause;

        my $before = tat_ahead($s, $w);
        my ($tx, $cmds);
        lookup_broken($s, $k, sub {
            ($cmds) = $s->redis_traffic(sub { $tx = $get->($path) });
        });
        failed_ok($tx, "$name: WRONGTYPE");
        # (rl_gcra's EVALSHA has the tolerance, rl_refund's not)
        my $want = 0;
        for (grep { /"EVALSHA" "[0-9a-f]{40}" "1" "\Q$gcra\E"/ } @$cmds) {
            my @args = /"([^"]*)"/g;
            next unless defined $args[5];
            $want = $args[6] // 1;
            last;
        }
        is($r->get($gcra), $before + ($want - 1) * $T,
           "$name: this request's admission given back (want $want)")
            or diag "@$cmds";
        next unless $want > 1;

        # the next read asks for the next lease (as the first of a lease
        # does), the one after spends the grant kept; the grant lost, it
        # would ask too (lease.h)
        my @tx;
        ($cmds) = $s->redis_traffic(sub { @tx = map { $get->($path) } 1, 2 });
        is(join(' ', map { $_->res->code } @tx), '200 200',
           "$name: then answered");
        is(scalar(grep { /"EVALSHA"/ } @$cmds), 1,
           "$name: two reads, one decision: the grant kept")
            or diag "@$cmds";
    }
    $s->stop;
};

done_testing;
