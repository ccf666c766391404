# linegate_lines_cache: each worker keeps the rendered answer of
# GET /api/lines/by-user per workspace and UTC day (at most 30 live
# lines), kept correct by Redis's server-assisted client-side caching: a
# fill tracks the index and each line hash it reads (CLIENT TRACKING ...
# REDIRECT <subscriber> OPTIN, CLIENT CACHING yes before each read), and
# the worker's subscriber connection takes the invalidations on
# __redis__:invalidate. A hit still costs the workspace's rate decision
# and the index's ZRANGE, but no HGETALL of the lines: the HGETALL count
# of INFO commandstats is what tells a hit from a read.
#
# What a cache must never do is answer what a completed write changed:
# every write below is followed by the very next by-user, with no sleep
# and no retry between them (the worker reads what is pending on its
# subscriber before it trusts an entry). The by-user calls go over the
# harness's kept-alive connection (the same worker every time), with a
# Clerk token: the workspace is known at once, so each call takes the
# plain path (an API key the worker has not seen yet takes lr_list.lua,
# which the cache is not about).
use strict;
use warnings;
use lib 't/lib';

use Test::More;

use IO::Socket::INET;
use Mojo::JSON qw(decode_json);
use Mojo::IOLoop;
use Mojo::Promise;
use Mojo::UserAgent;
use Time::HiRes qw(sleep time);
use LG::Stack;
use LG::Test qw(eventually http_body burst_then);
use LG::Lines;

# the template's linegate_lines_cache (@LINES_CACHE@, LG_LINES_CACHE or
# off for the other files): on here, whatever the environment says
my $s = LG::Stack->new(LINES_CACHE => '4m');

# a cluster serves no Lines API (issue 10), and the cache is not used on
# one: nothing to test there
plan skip_all => 'no Lines API cache on a Redis Cluster'
    if $s->topology eq 'cluster';

$s->start;
my $l = LG::Lines->new($s);
my $r = $s->redis;
my $n = 0;

my @d = gmtime;
my $TODAY = sprintf '%04d-%02d-%02d', $d[5] + 1900, $d[4] + 1, $d[3];

sub ws { return $l->workspace('org_lc' . ++$n, @_) }

# the calls of a Redis command so far (INFO commandstats; Redis 7 names a
# subcommand "client|caching"), on the stack's Redis
sub calls {
    my ($cmd, $st) = @_;
    my $i = ($st // $s)->redis->info('commandstats');
    my $v = $i->{"cmdstat_$cmd"} // '';
    return $v =~ /\bcalls=(\d+)/ ? $1 : 0;
}

# the HGETALLs Redis ran while $code did (by-user's answer comes after
# its reads, so they are all counted when $code returns), and what
# $code returned
sub hgetalls {
    my ($code, $st) = @_;
    my $before = calls('hgetall', $st);
    my @r = $code->();
    return (calls('hgetall', $st) - $before, @r);
}

# by-user with a fresh Clerk token of the workspace, over the kept-alive
# connection of the stack's user agent (or $ua: another connection)
sub by_user {
    my ($w, $ua, $st) = @_;
    $st //= $s;
    $ua //= $st->ua;
    my $tok = $st->clerk_token(o => {id => ref $w ? $w->{id} : $w});
    return $ua->get($st->url('/api/lines/by-user')
                    => {Authorization => "Bearer $tok"});
}

# by-user and the HGETALLs it cost: (count, transaction)
sub counted {
    my ($w, $ua) = @_;
    return hgetalls(sub { by_user($w, $ua) });
}

sub lines_of {
    my ($tx) = @_;
    my $b = eval { decode_json($tx->res->body) } // {};
    return @{ $b->{lines} // [] };
}

sub line_of {
    my ($tx, $id) = @_;
    my ($line) = grep { ($_->{_id} // '') eq $id } lines_of($tx);
    return $line // {};
}

# linegate's subscriber connections: the clients subscribed to the
# revocations' pattern and to the invalidations' channel (Sentinel's own
# clients of the master SUBSCRIBE to a channel, never to a pattern)
sub subscribers {
    my ($st) = @_;
    my $list = eval { ($st // $s)->redis->client('list') } // '';
    return map { /\bid=(\d+)/ ? $1 : () }
           grep { /\bsub=1\b/ && /\bpsub=1\b/ } split /\n/, $list;
}

# the clients with tracking on (flag t) and the client each redirects
# its invalidations to: {id => redir}
sub trackers {
    my $list = eval { $r->client('list') } // '';
    my %t;
    for (split /\n/, $list) {
        my ($flags) = /\bflags=(\S+)/ or next;
        next unless $flags =~ /t/;
        my ($id) = /\bid=(\d+)/;
        my ($redir) = /\bredir=(-?\d+)/;
        $t{$id} = $redir;
    }
    return \%t;
}

# until both workers are subscribed (and a moment for their first PING,
# as t/186 waits: the worker takes a subscription as live once answered)
sub wait_subscribed {
    my ($st, $timeout) = @_;
    eventually(sub { subscribers($st) == 2 }, $timeout // 10) or return 0;
    sleep 0.5;
    return 1;
}

# an operator call over a new connection (either worker): a write that
# need not go through the worker answering by-user
sub op_new_conn {
    my ($method, $path, $body) = @_;
    my $ua = Mojo::UserAgent->new(request_timeout => 10);
    my $tx = $ua->build_tx($method => $s->url("/_linegate$path")
        => {Authorization => 'Bearer ' . $s->operator_token}
        => (defined $body ? (json => $body) : ()));
    return $ua->start($tx);
}

sub op_ok {
    my ($tx, $name) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    ok($tx->res->is_success, $name)
        or diag(($tx->res->code // 'no answer') . ' ' . $tx->res->body);
}

# The workspace's entry is in this worker's cache: a by-user that costs
# no HGETALL (a fill first if needed: the entry may have been dropped)
sub warm {
    my ($w, $name) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    by_user($w);
    my ($h, $tx) = counted($w);
    is($tx->res->code, 200, "$name: by-user answered");
    is($h, 0, "$name: answered from the cache (no HGETALL)");
    return $tx;
}

# a line request written as the Lines API writes it, from a template (a
# real one's hash), and put in the workspace's index
sub seed_line {
    my ($w, $tpl, $i, %f) = @_;
    my $id = sprintf '%024x', 0xc0c0000 + $n * 1000 + $i;
    $r->hset("lg:{ws:$w->{id}}:lr:$id", %$tpl, firstName => "Seed$i",
             provisioningStatus => 'active', %f);
    $r->set("lg:line:$id", $w->{id});
    $r->zadd("lg:{ws:$w->{id}}:lines", 1_800_000_000_000 + $i, $id);
    return $id;
}

# the MONITOR lines of one client, by its address
sub by_client {
    my ($cmds) = @_;
    my %c;
    for (@$cmds) {
        my ($addr) = /\[\d+ ([\d.]+:\d+)\]/ or next;
        push @{ $c{$addr} }, $_;
    }
    return \%c;
}

ok(wait_subscribed($s), 'both workers subscribed (revocations and '
   . 'invalidations)');

subtest 'hits: the answer kept, no HGETALL' => sub {
    my $w = ws();
    my $a1 = $l->created($w, firstName => 'One');
    my $a2 = $l->created($w, firstName => 'Two');
    my ($a3) = $l->awaiting($w, firstName => 'Three');
    my $idx = "lg:{ws:$w->{id}}:lines";

    # the fill: the index and the three hashes, each read tracked
    my ($first, $h, $cmds);
    my $caching = calls('client|caching');
    ($cmds) = $s->redis_traffic(sub { ($h, $first) = counted($w) });
    my $b = $l->answer($first, 200, 'the first by-user');
    is($h, 3, 'the first by-user: 3 HGETALL (one per line)');
    is_deeply([map { $_->{firstName} } @{ $b->{lines} }],
              [qw(One Two Three)], 'the three lines, oldest first');
    cmp_ok(calls('client|caching') - $caching, '>=', 3,
           'CLIENT CACHING yes sent for the reads of the fill');
    cmp_ok(calls('client|tracking'), '>=', 1, 'CLIENT TRACKING sent');

    # OPTIN tracks only the command right after CLIENT CACHING yes: each
    # HGETALL of the fill must follow one on its connection
    my ($conn) = grep { grep { /"HGETALL"/i } @$_ }
                 values %{ by_client($cmds) };
    my @seq = map {
        my ($cmd, $sub) = /\] "(\w+)"(?: "(\w+)")?/;
        !defined $cmd      ? '?'
        : uc $cmd eq 'CLIENT' ? 'CLIENT ' . uc($sub // '')
        : uc $cmd;
    } @{ $conn // [] };
    my $bad = 0;
    for my $i (0 .. $#seq) {
        next unless $seq[$i] eq 'HGETALL';
        $bad++ unless $i > 0 && $seq[$i - 1] eq 'CLIENT CACHING';
    }
    is($bad, 0, 'every HGETALL of the fill right after CLIENT CACHING')
        or diag explain \@seq;
    for (grep { /"CLIENT" "TRACKING"/i } @{ $conn // [] }) {
        my ($to) = /"REDIRECT" "(\d+)"/i;
        ok(defined $to && grep({ $_ == $to } subscribers()),
           'TRACKING redirects to a live subscriber') or diag $_;
        like($_, qr/"OPTIN"/i, 'TRACKING ... OPTIN');
    }

    # tracking is on for the worker's command connection, redirected to
    # a subscriber that is alive
    my $t = trackers();
    my %live = map { $_ => 1 } subscribers();
    ok(scalar(keys %$t), 'a command connection tracks keys');
    is(scalar(grep { !$live{$_} } values %$t), 0,
       'every tracking connection redirects to a live subscriber')
        or diag explain $t, [keys %live];

    # five more: from the cache, the same bytes
    my $total = 0;
    my @bodies;
    for (1 .. 5) {
        my ($c, $tx) = counted($w);
        $total += $c;
        is($tx->res->code, 200, "hit $_: 200");
        push @bodies, $tx->res->body;
    }
    is($total, 0, '5 more by-user: no HGETALL');

    # the metrics count the hits and the reads (shared by the workers)
    my $m = $s->ua->get($s->url('/metrics'))->res->body;
    my %c = $m =~ /^linegate_cache_requests_total
                   \{cache="lines",result="(\w+)"\}\ (\d+)/mxg;
    cmp_ok($c{hit} // 0, '>=', 5, 'metrics: by-user hits counted');
    cmp_ok($c{miss} // 0, '>=', 1, 'metrics: by-user reads counted');
    is(scalar(grep { $_ eq $first->res->body } @bodies), 5,
       'byte-identical to the first answer');

    # a hit still decides the workspace's rate and reads the index once
    my $tx;
    ($cmds) = $s->redis_traffic(sub { $tx = by_user($w) });
    is($tx->res->body, $first->res->body, 'the measured hit: same bytes');
    is(scalar(grep { /"HGETALL"/i } @$cmds), 0, 'the hit: no HGETALL')
        or diag "@$cmds";
    is(scalar(grep { /"ZRANGE" "\Q$idx\E"/i } @$cmds), 1,
       'the hit: one ZRANGE of the index') or diag "@$cmds";
    ok(scalar(grep { /:gcra"/ } @$cmds), 'the hit: the rate decision')
        or diag "@$cmds";

    # with the API key, once the worker knows it (its first call resolves
    # the key with lr_list.lua): the same entry, the same bytes
    $l->list($w) for 1 .. 2;
    my ($k, $ktx) = hgetalls(sub { $l->list($w) for 1 .. 2; $l->list($w) });
    is($k, 0, 'API key, known to the worker: no HGETALL');
    is($ktx->res->body, $first->res->body, 'API key: the same bytes');

    # what a worker without the entry answers (lr_list.lua, for a key it
    # has never seen: t/130 shows it answers what the plain path answers)
    my $nk = $s->op(POST => "/workspaces/$w->{id}/keys")->res->json;
    my $stx = $l->list({Authorization => "Bearer $nk->{key}"});
    is($stx->res->body, $first->res->body,
       'the cached bytes are what lr_list.lua answers');
};

subtest 'every writer is seen by the very next by-user' => sub {
    my $w = ws();
    my $a = $l->created($w, firstName => 'Alpha');
    my $b = $l->created($w, firstName => 'Bravo');

    # (b) the operator's transition to active, from another connection
    warm($w, 'before the transition');
    op_ok(op_new_conn(POST => "/lines/$a/active",
                      {phone => '+14155550111'}), 'Alpha set up');
    my ($h, $tx) = counted($w);
    is(line_of($tx, $a)->{provisioningStatus}, 'active',
       'transition: active at once');
    is(line_of($tx, $a)->{phone}, '+14155550111', 'transition: its number');
    cmp_ok($h, '>', 0, 'transition: read again from Redis');

    # (a) a health report, through the same worker as by-user
    warm($w, 'before the health report');
    op_ok($s->op(POST => "/lines/$a/health", {status => 'unhealthy'}),
          'health reported');
    ($h, $tx) = counted($w);
    is(line_of($tx, $a)->{healthCheck}{status}, 'unhealthy',
       'health: seen at once');
    cmp_ok($h, '>', 0, 'health: read again from Redis');

    # (c) a usage report (the day's counters are kept in the line's hash)
    warm($w, 'before the usage report');
    op_ok(op_new_conn(POST => "/lines/$a/usage",
                      {newConversations => 3, totalMessages => 7}),
          'usage reported');
    ($h, $tx) = counted($w);
    is_deeply(line_of($tx, $a)->{usage},
              {date => $TODAY, newConversationsCount => 3,
               totalMessagesCount => 7}, 'usage: seen at once');
    cmp_ok($h, '>', 0, 'usage: read again from Redis');

    # (d) a new request (the third line of a growth plan awaits payment)
    warm($w, 'before the creation');
    my ($c) = $l->awaiting($w, firstName => 'Charlie');
    ($h, $tx) = counted($w);
    is_deeply([map { $_->{firstName} } lines_of($tx)],
              [qw(Alpha Bravo Charlie)], 'created: listed at once');
    is(line_of($tx, $c)->{provisioningStatus}, 'awaiting_payment',
       'created: awaiting payment');
    cmp_ok($h, '>', 0, 'created: read again from Redis');

    # (e) canceled (the invoice voided at the stub): gone from the list
    warm($w, 'before the cancel');
    $l->answer($l->manage($w, $c, 'cancel'), 200, 'Charlie canceled');
    ($h, $tx) = counted($w);
    is_deeply([map { $_->{firstName} } lines_of($tx)], [qw(Alpha Bravo)],
              'canceled: left out at once');
    cmp_ok($h, '>', 0, 'canceled: read again from Redis');

    # (f) a writer outside linegate: redis-cli's HSET
    warm($w, 'before the outside write');
    $r->hset("lg:{ws:$w->{id}}:lr:$b", firstName => 'Zed');
    ($h, $tx) = counted($w);
    is(line_of($tx, $b)->{firstName}, 'Zed', 'HSET: seen at once');
    cmp_ok($h, '>', 0, 'HSET: read again from Redis');

    # and kept again afterwards, with the new content
    my $after = warm($w, 'after the writes');
    is(line_of($after, $b)->{firstName}, 'Zed', 'the new entry: Zed');
    is($after->res->body, $tx->res->body, 'the new entry: the same bytes');
};

subtest 'the index changed from outside: seen at once' => sub {
    my $w = ws();
    my $a = $l->created($w, firstName => 'Ann');
    my $b = $l->created($w, firstName => 'Ben');
    my $other = ws();
    $l->created($other, firstName => 'Olga');
    my $idx = "lg:{ws:$w->{id}}:lines";
    my %tpl = $r->hgetall("lg:{ws:$w->{id}}:lr:$a");

    warm($other, 'another workspace');
    warm($w, 'before the index changes');

    # a hash the index does not name yet: nothing to list, nothing that
    # a fill read (the entry stays)
    my $id = sprintf '%024x', 0xadd000 + $n;
    $r->hset("lg:{ws:$w->{id}}:lr:$id", %tpl, firstName => 'Cal');
    $r->set("lg:line:$id", $w->{id});
    my ($h, $tx) = counted($w);
    is_deeply([map { $_->{firstName} } lines_of($tx)], [qw(Ann Ben)],
              'a hash not in the index is not listed');

    # ZADD of its id into the index
    $r->zadd($idx, 1_900_000_000_000, $id);
    ($h, $tx) = counted($w);
    is_deeply([map { $_->{firstName} } lines_of($tx)], [qw(Ann Ben Cal)],
              'ZADD: the new id listed at once');
    cmp_ok($h, '>', 0, 'ZADD: read again from Redis');

    # the index deleted: no line any more
    warm($w, 'before the DEL');
    my $zs = [$r->zrange($idx, 0, -1, 'WITHSCORES')];
    $r->del($idx);
    ($h, $tx) = counted($w);
    is($tx->res->body, '{"lines":[]}', 'DEL of the index: an empty list');
    is($h, 0, 'DEL of the index: no hash to read');

    # and back
    $r->zadd($idx, reverse @$zs);
    ($h, $tx) = counted($w);
    is_deeply([map { $_->{firstName} } lines_of($tx)], [qw(Ann Ben Cal)],
              'the index back: listed again');
    is($h, 3, 'the index back: the three hashes read');

    # the other workspace's entry is not dropped by these writes
    ($h, $tx) = counted($other);
    is($h, 0, 'another workspace: still from the cache');
    is_deeply([map { $_->{firstName} } lines_of($tx)], ['Olga'],
              'another workspace: its own line');
};

# FLUSHDB (FLUSHALL alike): Redis 7 sends each tracking client one
# invalidation whose key list is null, which drops every entry. The keys
# written back after it are no longer tracked (the flush emptied the
# tracking table): an entry kept through the flush would be served until
# it expires, whatever is written since
subtest 'FLUSHDB: every entry dropped' => sub {
    my $w = ws();
    my $a = $l->created($w, firstName => 'Ann');
    warm($w, 'before FLUSHDB');

    my %dump;
    for my $k ($r->keys('*')) {
        my $v = $r->dump($k);
        $dump{$k} = [$r->pttl($k), $v] if defined $v;
    }
    $r->flushdb;
    for my $k (keys %dump) {
        my ($ttl, $v) = @{ $dump{$k} };
        $r->restore($k, $ttl > 0 ? $ttl : 0, $v);
    }
    $r->hset("lg:{ws:$w->{id}}:lr:$a", firstName => 'Zed');

    my ($h, $tx) = counted($w);
    is($tx->res->code, 200, 'answered');
    is_deeply([map { $_->{firstName} } lines_of($tx)], ['Zed'],
              'the hash written after the flush, not the entry');
    cmp_ok($h, '>', 0, 'read from Redis again');
    warm($w, 'kept again after it');
};

# The table is a red-black tree by the workspace id's hash: ids whose
# hashes are equal ("Aa" and "BB" are, for nginx's ngx_hash_key) must
# still be told apart, found and dropped, whatever the tree's rotations
# (the first version looked equal hashes up on one side only, and lost
# entries once a rotation moved them)
subtest 'workspaces whose ids hash alike' => sub {
    my @w = map { $l->workspace("org_lch$_") } qw(Aa BB AaAa BBBB AaBB BBAa);
    my %line = map { $_->{id} => scalar $l->created($_, firstName => "Old") }
               @w;

    # filled in turn, then each one from the table
    by_user($_) for @w;
    for my $w (@w) {
        my ($h, $tx) = counted($w);
        is($h, 0, "$w->{id}: from the cache");
        is(line_of($tx, $line{$w->{id}})->{workspaceId}, $w->{id},
           "$w->{id}: its own answer") or diag $tx->res->body;
    }

    # each changed in turn: seen at once, the others still kept
    for my $i (0 .. $#w) {
        my $w = $w[$i];
        $r->hset("lg:{ws:$w->{id}}:lr:$line{$w->{id}}", 'firstName',
                 "New$i");
        my ($h, $tx) = counted($w);
        is(line_of($tx, $line{$w->{id}})->{firstName}, "New$i",
           "$w->{id}: its change seen at once");
        cmp_ok($h, '>', 0, "$w->{id}: read again");
    }
};

subtest 'at most 30 live lines are kept' => sub {
    my $w = ws();
    my $a = $l->created($w, firstName => 'Real');
    my %tpl = $r->hgetall("lg:{ws:$w->{id}}:lr:$a");
    my @ids = map { seed_line($w, \%tpl, $_) } 1 .. 29;

    by_user($w);
    my ($h, $tx) = counted($w);
    is(scalar(lines_of($tx)), 30, '30 lines listed');
    is($h, 0, '30 lines: from the cache');

    my $more = seed_line($w, \%tpl, 30);
    ($h, $tx) = counted($w);
    is(scalar(lines_of($tx)), 31, '31 lines listed');
    is($h, 31, '31 lines: every hash read');
    ($h, $tx) = counted($w);
    is($h, 31, '31 lines: every hash read again (not kept)');

    $r->zrem("lg:{ws:$w->{id}}:lines", $more);
    by_user($w);
    ($h, $tx) = counted($w);
    is(scalar(lines_of($tx)), 30, 'back to 30');
    is($h, 0, 'back to 30: from the cache again');
};

# both workers read and fill while a line changes 50 times; whatever the
# interleaving, an answer is never older than one already given on the
# same connection, and once the writer is done, every answer shows its
# last value
subtest 'a race: 8 readers, 50 writes' => sub {
    my $w = ws();
    my $a = $l->created($w, firstName => 'Still');
    my $b = $l->created($w);
    my $key = "lg:{ws:$w->{id}}:lr:$b";
    $r->hset($key, firstName => 'v0');

    my ($written, $done) = (0, 0);
    my (%seen, @errors);
    my $reads = 0;
    my $before = calls('hgetall');

    my $reader = sub {
        my ($i) = @_;
        my $ua = Mojo::UserAgent->new(request_timeout => 10,
                                      inactivity_timeout => 10);
        my $tok = $s->clerk_token(o => {id => $w->{id}});
        my $p = Mojo::Promise->new;
        my ($after, $next) = (0);
        $next = sub {
            my $sent_after = $done;
            $ua->get_p($s->url('/api/lines/by-user')
                       => {Authorization => "Bearer $tok"})->then(sub {
                my ($tx) = @_;
                $reads++;
                my $name = line_of($tx, $b)->{firstName} // '';
                my ($v) = $name =~ /^v(\d+)$/;
                push @errors, "reader $i: " . ($tx->res->code // 0)
                              . ' ' . $tx->res->body
                    unless ($tx->res->code // 0) == 200 && defined $v;
                push @{ $seen{$i} }, [$sent_after, $v // -1];
                if ($sent_after && ++$after >= 3) {
                    undef $next;
                    return $p->resolve;
                }
                $next->();
            })->catch(sub { undef $next; $p->reject(@_) });
        };
        $next->();
        return $p;
    };

    my @p = map { $reader->($_) } 1 .. 8;
    my $timer;
    $timer = Mojo::IOLoop->recurring(0.005 => sub {
        return if $done;
        $written++;
        $r->hset($key, firstName => "v$written");
        if ($written == 50) {
            $done = 1;
            Mojo::IOLoop->remove($timer);
        }
    });
    my $failed;
    Mojo::Promise->all(@p)->catch(sub { $failed = "@_" })->wait;

    ok(!$failed, 'the readers ran') or diag $failed;
    is($written, 50, '50 writes');
    is(scalar @errors, 0, 'every read answered 200 with the line')
        or diag explain [@errors[0 .. ($#errors > 4 ? 4 : $#errors)]];
    note "$reads reads, " . (calls('hgetall') - $before) . ' HGETALL';

    my ($older, $stale) = (0, 0);
    for my $i (sort keys %seen) {
        my $max = -1;
        for (@{ $seen{$i} }) {
            my ($after, $v) = @$_;
            $older++ if $v < $max;
            $max = $v if $v > $max;
            $stale++ if $after && $v != 50;
        }
    }
    is($older, 0, 'no answer older than one given before on its '
       . 'connection') or diag explain \%seen;
    is($stale, 0, 'every read sent after the last write shows it');

    # the race's HGETALLs are only noted: how many reads met a fresh
    # invalidation depends on the machine's speed. Once the writes are
    # done it is exact: 10 reads one after the other fill each worker's
    # entry at most once (2 lines: 2 HGETALLs), the others are hits; a
    # cache bypassed would cost 20
    my ($h, @fresh) = hgetalls(sub { map {
        line_of(by_user($w, Mojo::UserAgent->new), $b)->{firstName} // ''
    } 1 .. 10 });
    is_deeply(\@fresh, [('v50') x 10], '10 new connections: v50');
    cmp_ok($h, '<=', 4, '10 reads after the writes: at most one fill per '
           . "worker ($h HGETALL), the others from the cache");
};

# Read-your-writes when many invalidations come at once: a worker
# tracking thousands of keys (200 workspaces of 30 lines filled), one
# MULTI/EXEC changing all of them, the target's line last. Redis queues
# ~500 KB for the subscriber, and writes a client's output 64 KB a turn;
# the target's by-user is sent the moment EXEC is answered (raw sockets:
# no client library between them), over the connection that filled it.
# A worker that trusts its entry without knowing it has read everything
# Redis queued before answering that by-user's index serves the old name.
subtest 'a burst of invalidations: a completed write still seen' => sub {
    my $t = ws();
    my $a = $l->created($t, firstName => 'Tee');
    my $tkey = "lg:{ws:$t->{id}}:lr:$a";
    my %tpl = $r->hgetall($tkey);
    my (@keys, @many);
    for my $i (1 .. 200) {
        my $ws = "org_lcburst$i";
        push @many, $ws;
        $r->hset("lg:{ws:$ws}", plan => 'growth',
                 subscriptionStatus => 'active', sub {});
        for my $j (1 .. 30) {
            my $id = sprintf '%08x%016x', $i, $j;
            push @keys, "lg:{ws:$ws}:lr:$id";
            $r->hset($keys[-1], %tpl, firstName => "B$j", sub {});
            $r->zadd("lg:{ws:$ws}:lines", 1_800_000_000_000 + $j, $id,
                     sub {});
        }
        $r->wait_all_responses;
    }

    my $http = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                      PeerPort => $s->port) or die $!;
    my $red = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                     PeerPort => $s->redis_port) or die $!;
    my %tok;
    my $req = sub {
        my ($ws) = @_;
        $tok{$ws} //= $s->clerk_token(o => {id => $ws});
        return "GET /api/lines/by-user HTTP/1.1\r\nHost: lg\r\n"
             . "Authorization: Bearer $tok{$ws}\r\n\r\n";
    };
    my $answer = sub { http_body($http) };
    my $get = sub { syswrite $http, $req->($_[0]); return $answer->() };
    my $name = sub {
        my ($body) = @_;
        my $b = eval { decode_json($body) } // {};
        return ($b->{lines} // [{}])->[0]{firstName} // "?$body";
    };

    my @stale;
    for my $round (1 .. 5) {
        $get->($_) for @many;    # each fill tracks the index and 30 hashes
        $get->($t->{id});
        my ($h) = hgetalls(sub { $get->($t->{id}) });
        is($h, 0, "round $round: the target from the cache");

        my $got = $name->(burst_then(
            $red, \@keys, $round, $tkey, [firstName => "Burst$round"],
            $http, $req->($t->{id})));
        push @stale, "round $round: $got" if $got ne "Burst$round";
    }
    is_deeply(\@stale, [], 'every by-user sent after EXEC answered shows '
              . 'the write');
    close $http;
    close $red;
};

subtest 'the subscriber killed: read from Redis until subscribed again'
    => sub {
    my $w = ws();
    my $a = $l->created($w, firstName => 'Kim');
    my $b = $l->created($w, firstName => 'Lee');
    my $key = "lg:{ws:$w->{id}}:lr:$b";
    my $off = length $s->error_log;

    my $first = warm($w, 'before the kill');

    my @subs = subscribers();
    is(scalar @subs, 2, 'two subscribers (one per worker)');
    my $killed = 0;
    $killed += $r->client('kill', 'id', $_) for @subs;
    is($killed, 2, 'both killed (CLIENT KILL ID)');

    # no invalidation can reach the worker now: the entry must go
    my ($h, $tx) = counted($w);
    is($tx->res->code, 200, 'right after the kill: 200');
    is($h, 2, 'right after the kill: read from Redis');
    is($tx->res->body, $first->res->body, 'right after the kill: correct');

    # a write while there is no subscriber
    $r->hset($key, firstName => 'Lou');
    ($h, $tx) = counted($w);
    is(line_of($tx, $b)->{firstName}, 'Lou',
       'written while unsubscribed: seen');
    is($h, 2, 'written while unsubscribed: read from Redis');

    ok(wait_subscribed($s), 'both workers subscribed again') or return;
    like(substr($s->error_log, $off), qr/redis subscriber disconnected/,
         'the loss is logged');

    # cached again, tracked to the new subscriber
    $tx = warm($w, 'subscribed again');
    is(line_of($tx, $b)->{firstName}, 'Lou', 'subscribed again: Lou');
    # (the other worker's connection may still name its old subscriber
    # until its next fill: a redirect to nobody, harmless)
    my %live = map { $_ => 1 } subscribers();
    my $t = trackers();
    ok(scalar(grep { $live{$_} } values %$t),
       'tracking redirects to a new subscriber') or diag explain $t;

    $r->hset($key, firstName => 'Max');
    ($h, $tx) = counted($w);
    is(line_of($tx, $b)->{firstName}, 'Max',
       'a write after the new subscription: seen at once');
    cmp_ok($h, '>', 0, 'and read from Redis');
};

# Redis that takes no client tracking (Redis 5, or an ACL without
# CLIENT TRACKING): the subscriber asks `CLIENT TRACKING off` when it
# connects, and on a refusal no fill is tried on that subscription (each
# by-user reads Redis, answered right) and the log says why
subtest 'client tracking refused: every by-user read, the log says why'
    => sub {
    my $w = ws();
    my $a = $l->created($w, firstName => 'Ray');
    my $b = $l->created($w, firstName => 'Sue');
    warm($w, 'before the ACL');
    my $off = length $s->error_log;

    $r->acl('setuser', 'default', '-client|tracking');
    $r->client('kill', 'id', $_) for subscribers();
    ok(wait_subscribed($s), 'both workers subscribed again') or return;
    ok(eventually(sub { substr($s->error_log, $off)
                        =~ /redis refused client tracking/ }, 5),
       'the refusal is logged');

    for my $i (1 .. 3) {
        my ($h, $tx) = counted($w);
        is($tx->res->code, 200, "refused, by-user $i: 200");
        is($h, 2, "refused, by-user $i: both hashes read");
        is(line_of($tx, $b)->{firstName}, 'Sue', "refused, by-user $i: right");
    }
    $r->hset("lg:{ws:$w->{id}}:lr:$b", firstName => 'Tom');
    my ($h, $tx) = counted($w);
    is(line_of($tx, $b)->{firstName}, 'Tom', 'refused: a write seen');

    # allowed again: cached again once the subscribers asked again
    $r->acl('setuser', 'default', '+client|tracking');
    $r->client('kill', 'id', $_) for subscribers();
    ok(wait_subscribed($s), 'subscribed again, tracking allowed') or return;
    warm($w, 'tracking allowed again');
};

# linegate's subscriptions to the revocations' pattern, with or without
# the invalidations' channel: {id => sub}
sub revokers {
    my $list = eval { $r->client('list') } // '';
    my %p;
    for (split /\n/, $list) {
        next unless /\bpsub=1\b/;
        my ($id) = /\bid=(\d+)/;
        my ($sub) = /\bsub=(\d+)/;
        $p{$id} = $sub;
    }
    return \%p;
}

# An ACL whose channels leave out client tracking's (a Redis 7 user made
# with ACL SETUSER has none, acl-pubsub-default resetchannels, and is
# given the revocations' alone): SUBSCRIBE __redis__:invalidate is
# refused, and hiredis drops a subscribed connection on an error reply
# no command waits for. The revocations' subscription must come up and
# stay up all the same, without the invalidations (no fill, each by-user
# reads Redis), and the log says why. The first version subscribed and
# was dropped again, every 100 ms to 2 s, for as long as the ACL held.
subtest 'the invalidations\' channel refused: revocations still pushed'
    => sub {
    plan skip_all => 'Redis 7 ACL channels'
        unless ($r->info('server')->{redis_version} // '0') =~ /^(\d+)/
               && $1 >= 7;
    my $w = ws();
    my $b = $l->created($w, firstName => 'Una');
    warm($w, 'before the ACL');
    my $off = length $s->error_log;

    $r->acl('setuser', 'default', 'resetchannels', '&lg:keys:revoked',
            '&__sentinel__:*');
    my $ok = eval {
        $r->client('kill', 'id', $_) for keys %{ revokers() };

        ok(eventually(sub { keys %{ revokers() } == 2 }, 10),
           'both workers subscribed to the revocations again')
            or diag explain revokers();
        my $first = revokers();
        is_deeply([sort values %$first], [0, 0],
                  'without the invalidations\' channel');

        # longer than the backoff's longest (2 s): a loop would show
        sleep 2.5;
        is_deeply([sort keys %{ revokers() }], [sort keys %$first],
                  'the same connections, still subscribed');
        my $log = substr $s->error_log, $off;
        # (the kill is one more each)
        my $drops = () = $log =~ /subscriber disconnected: NOPERM/g;
        cmp_ok($drops, '<=', 2, 'refused once per worker at most')
            or diag $log;
        like($log, qr/invalidations' channel refused/,
             'the refusal is logged');

        for my $i (1 .. 2) {
            my ($h, $tx) = counted($w);
            is($tx->res->code, 200, "refused, by-user $i: 200");
            is($h, 1, "refused, by-user $i: read from Redis");
        }
        $r->hset("lg:{ws:$w->{id}}:lr:$b", firstName => 'Val');
        my ($h, $tx) = counted($w);
        is(line_of($tx, $b)->{firstName}, 'Val', 'refused: a write seen');
        1;
    };
    my $err = $@;

    # allowed again: cached again once the subscribers asked again
    $r->acl('setuser', 'default', 'allchannels');
    die $err unless $ok;
    $r->client('kill', 'id', $_) for keys %{ revokers() };
    ok(wait_subscribed($s), 'subscribed again, channel allowed') or return;
    warm($w, 'channel allowed again');
};

# The tracking lives on the command connection: when it is lost, Redis
# forgets what it tracked and will never tell of a write; the entries
# filled through it cannot be trusted any more
subtest 'the command connection lost: nothing kept from before' => sub {
    my $w = ws();
    my $b = $l->created($w, firstName => 'Ned');
    my $key = "lg:{ws:$w->{id}}:lr:$b";

    warm($w, 'before the kill');
    my @t = keys %{ trackers() };
    ok(@t, 'the tracking connection(s)') or return;
    my $off = length $s->error_log;
    my $killed = 0;
    $killed += $r->client('kill', 'id', $_) for @t;
    is($killed, scalar @t, 'killed (CLIENT KILL ID)');

    # until the worker has its command connection again
    my $until = time + 10;
    my $back = 0;
    while (time < $until) {
        my $log = substr $s->error_log, $off;
        $back = () = $log =~ /linegate: redis connected/g;
        last if $back >= @t;
        sleep 0.05;
    }
    ok($back >= @t, 'connected again') or return;

    $r->hset($key, firstName => 'Ola');
    my ($h, $tx) = counted($w);
    is($tx->res->code, 200, 'after the loss: 200');
    is(line_of($tx, $b)->{firstName}, 'Ola',
       'a write after the loss: seen');
    cmp_ok($h, '>', 0, 'read from Redis');

    # and cached again, tracked on the new connection
    warm($w, 'tracked again');
    $r->hset($key, firstName => 'Pam');
    ($h, $tx) = counted($w);
    is(line_of($tx, $b)->{firstName}, 'Pam', 'then a write: seen at once');
};

# A stack whose configuration has no linegate_lines_cache at all (the
# template always names it: the line is taken out), for the default
package LG::Stack::NoLinesCache {
    our @ISA = ('LG::Stack');

    sub render {
        my $conf = shift->SUPER::render(@_);
        $conf =~ s/^[ \t]*linegate_lines_cache\b[^\n]*\n//mg;
        return $conf;
    }
}

subtest 'off by default (and off): every by-user reads every hash' => sub {
    for my $case (['no directive', LG::Stack::NoLinesCache->new],
                  ['off', LG::Stack->new(LINES_CACHE => 'off')])
    {
        my ($name, $plain) = @$case;
        $plain->start;
        unlike($plain->render, qr/linegate_lines_cache\s+(?!off)/,
               "$name: not on in the configuration");
        my $pl = LG::Lines->new($plain);
        my $pw = $pl->workspace('org_lc_plain');
        $pl->created($pw, firstName => 'P1');
        $pl->created($pw, firstName => 'P2');
        $pl->awaiting($pw, firstName => 'P3');

        my @h;
        my $body;
        for (1 .. 4) {
            my ($c, $tx) = hgetalls(sub { by_user($pw, undef, $plain) },
                                    $plain);
            push @h, $c;
            $body //= $tx->res->body;
            is($tx->res->body, $body, "$name: by-user $_, the same answer");
        }
        is_deeply(\@h, [3, 3, 3, 3], "$name: each by-user, 3 HGETALL");
        is(calls('client|tracking', $plain), 0, "$name: no CLIENT TRACKING");
        is(calls('client|caching', $plain), 0, "$name: no CLIENT CACHING");
        my (undef, $num) = $plain->redis->pubsub('numsub',
                                                 '__redis__:invalidate');
        is($num, 0, "$name: nobody subscribed to __redis__:invalidate");
        $plain->stop;
    }
};

subtest 'the directive\'s values' => sub {
    # (the template's own line: a second one would be refused as a
    # duplicate, which says nothing of the value)
    for my $bad ('bogus', '4q', '') {
        my ($rc, $out) = $s->nginx_t($s->render(LINES_CACHE => $bad));
        ok($rc, "\"$bad\" refused");
        like($out, qr/\[emerg\].*linegate_lines_cache/,
             "\"$bad\": the message names the directive") or diag $out;
        unlike($out, qr/duplicate/, "\"$bad\": for its value");
    }
    for my $good ('off', '4m', '512k') {
        my ($rc, $out) = $s->nginx_t($s->render(LINES_CACHE => $good));
        is($rc, 0, "\"$good\" taken") or diag $out;
    }
    my ($dup, $dout) = $s->nginx_t($s->render(LINES_CACHE => '4m',
        HTTP_EXTRA => 'linegate_lines_cache 4m;'));
    ok($dup, 'given twice: refused');
    like($dout, qr/duplicate/, 'given twice: a duplicate') or diag $dout;
    # an http-level directive: not in a server
    my ($rc, $out) = $s->nginx_t($s->render(LINES_CACHE => 'off',
        SERVER_EXTRA => 'linegate_lines_cache 4m;'));
    ok($rc, 'refused in a server block');
    like($out, qr/not allowed here/, 'not allowed here') or diag $out;
};

# An ACL without the revocations' channel either: the subscriber has
# nothing it may subscribe to. It asks again in 30 s, not at the
# reconnect backoff's pace (100 ms to 2 s, each refusal a disconnection
# and an error line), and the log says why; by-user answers all the same
# (from Redis). The first version reconnected and was refused again
# every 2 s at most, for as long as the ACL held.
subtest 'the revocations\' channel refused: asked again in 30 s' => sub {
    plan skip_all => 'Redis 7 ACL channels'
        unless ($r->info('server')->{redis_version} // '0') =~ /^(\d+)/
               && $1 >= 7;
    my $w = ws();
    $l->created($w, firstName => 'Vic');
    my $off = length $s->error_log;
    my $said = sub {
        my $log = substr $s->error_log, $off;
        return scalar(() = $log =~ /revocations' channel refused/g);
    };

    $r->acl('setuser', 'default', 'resetchannels', '&__sentinel__:*');
    my $ok = eval {
        $r->client('kill', 'id', $_) for keys %{ revokers() };
        ok(eventually(sub { $said->() >= 2 }, 10),
           'the refusal logged by both workers')
            or diag substr($s->error_log, $off);

        # longer than the backoff's longest (2 s): a loop would show
        my $mid = length $s->error_log;
        sleep 3;
        my $log = substr $s->error_log, $mid;
        my $drops = () = $log =~ /subscriber disconnected/g;
        is($drops, 0, 'not asked again meanwhile') or diag $log;
        is(scalar keys %{ revokers() }, 0, 'nobody subscribed');
        my (undef, $tx) = counted($w);
        is($tx->res->code, 200, 'by-user answers (from Redis)');
        1;
    };
    my $err = $@;
    $r->acl('setuser', 'default', 'allchannels');
    die $err unless $ok;
};

done_testing;
