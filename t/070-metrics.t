# linegate_api metrics: Prometheus's text format, counters shared by the
# workers of one nginx, moved by requests, checked by promtool.
use strict;
use warnings;
use lib 't/lib';

use File::Temp qw(tempfile);
use Test::More;
use Time::HiRes qw(sleep);
use LG::Docs;
use LG::Stack;
use LG::Lines qw(body);

my $PROMTOOL = '/usr/bin/promtool';

# a location limited by linegate_limit: passes once a minute per address;
# one by two zones, by a header (mk) or, without it, the address (anon);
# a proxy cache, whose manager and loader processes run the module's
# process start too (they must not connect to Redis)
my $HTTP_EXTRA = 'linegate_limit_zone m1 key=$remote_addr rate=1r/m; '
               . 'proxy_cache_path cache keys_zone=lg_cache:1m;';
my $s = LG::Stack->new(
    HTTP_EXTRA => $HTTP_EXTRA
        . ' map $http_x_k $lg_anon { "" $remote_addr; default ""; }'
        . ' linegate_limit_zone mk key=$http_x_k rate=1r/m;'
        . ' linegate_limit_zone anon key=$lg_anon rate=1r/m;'
        . ' linegate_limit_zone wide key=$http_x_k rate=100r/m burst=10;',
    SERVER_EXTRA => 'location = /limited { linegate_limit zone=m1; '
                    . 'try_files /nothing-here =404; } '
                    . 'location = /two { linegate_limit zone=mk; '
                    . 'linegate_limit zone=anon; linegate_limit zone=wide; '
                    . 'try_files /nothing-here =404; }',
)->start;
my $l = LG::Lines->new($s);

sub scrape {
    my $tx = $s->ua->get($s->url('/metrics'));
    is($tx->res->code, 200, 'metrics answered') or diag $tx->res->body;
    return $tx->res;
}

# the value of one series, 0 when absent
sub value {
    my ($text, $series) = @_;
    for (split /\n/, $text) {
        next if /^#/;
        my ($name, $v) = /^(\S+)\s+(\S+)$/ or next;
        return $v if $name eq $series;
    }
    return 0;
}

sub promtool_ok {
    my ($text, $name) = @_;
  SKIP: {
        skip 'promtool not installed (Debian package prometheus)', 1
            unless -x $PROMTOOL;
        my ($fh, $path) = tempfile(UNLINK => 1);
        print {$fh} $text;
        close $fh;
        my $out = `$PROMTOOL check metrics < $path 2>&1`;
        is($?, 0, "promtool check metrics: $name") or diag $out;
    }
}

subtest 'format and content type' => sub {
    my $res = scrape();
    like($res->headers->content_type, qr{^text/plain; version=0\.0\.4},
         'Prometheus text format');
    like($res->body, qr/^linegate_redis_reconnects_total \d+$/m,
         'families without labels always show a value');
    like($res->body, qr/^linegate_metrics_dropped_total 0$/m,
         'no series dropped');
    promtool_ok($res->body, 'fresh');

    my $tx = $s->ua->post($s->url('/metrics'));
    is($tx->res->code, 405, 'POST: 405');
};

subtest 'counters move with requests, across workers' => sub {
    my $w = $l->workspace('org_metrics');
    my $before = scrape()->body;

    my $api = 'linegate_http_answers_total{api="line_request_create",'
        . 'class="2xx"}';
    my $bad = 'linegate_http_answers_total{api="line_request_create",'
        . 'class="4xx"}';
    my $hit = 'linegate_cache_requests_total{cache="api_key",result="hit"}';
    my $passed = 'linegate_ratelimit_decisions_total{zone="workspace",'
        . 'status="PASSED"}';

    # several connections: both workers answer some
    my ($ok, $refused) = (0, 1);
    for (1 .. 6) {
        my $tx = $l->create($w, {firstName => 'A', lastName => 'B',
                                 channelType => 'email',
                                 email => "a$_\@example.com"});
        $ok++ if $tx->res->code == 201;
        $refused++ if $tx->res->code =~ /^4/;
    }
    my $tx = $l->create($w, {channelType => 'fax'});
    is($tx->res->code, 400, 'a bad request');

    my $after = scrape()->body;
    is(value($after, $api) - value($before, $api), $ok,
       "2xx answers counted ($ok)");
    is(value($after, $bad) - value($before, $bad), $refused,
       "4xx answers counted ($refused)");
    cmp_ok(value($after, $hit), '>', value($before, $hit),
           'API-key cache hits counted');
    cmp_ok(value($after, $passed) - value($before, $passed), '>=', 6,
           'rate decisions counted');
    like($after, qr/^linegate_http_outcomes_total\{api="line_request_create",outcome="\w+"\} \d+$/m,
         'outcomes by API');
    promtool_ok($after, 'after requests');
};

subtest 'Redis and Stripe' => sub {
    my $text = scrape()->body;
    my $node = '127.0.0.1:' . $s->redis_port;
    is(value($text, qq{linegate_redis_connected{node="$node"}}), 2,
       'both workers connected to the node');
    cmp_ok(value($text, 'linegate_redis_command_duration_seconds_count'),
           '>', 0, 'Redis commands timed');
    is(value($text, 'linegate_redis_command_duration_seconds_bucket'
                    . '{le="+Inf"}'),
       value($text, 'linegate_redis_command_duration_seconds_count'),
       'the +Inf bucket is the count');
    cmp_ok(value($text, 'linegate_stripe_requests_total{endpoint='
                        . '"invoices",outcome="ok"}'), '>', 0,
           'Stripe calls by endpoint, ids left out');
    like($text, qr/^linegate_stripe_request_duration_seconds_count\{endpoint="invoiceitems"\} \d+$/m,
         'their time');
    unlike($text, qr/endpoint="in_/, 'no invoice id as an endpoint');
    like($text, qr/^linegate_reconcile_backlog \d+$/m, 'the backlog gauge');
    promtool_ok($text, 'Redis and Stripe');
};

subtest 'linegate_limit decisions by zone and status' => sub {
    my @codes = map { $s->ua->get($s->url('/limited'))->res->code } 1 .. 3;
    is("@codes", '404 429 429', 'one passes, then rejected');
    my $text = scrape()->body;
    is(value($text, 'linegate_ratelimit_decisions_total{zone="m1",'
                    . 'status="PASSED"}'), 1, 'one PASSED');
    is(value($text, 'linegate_ratelimit_decisions_total{zone="m1",'
                    . 'status="REJECTED"}'), 2, 'two REJECTED');
    promtool_ok($text, 'limits');
};

subtest 'each zone counted by its own decision' => sub {
    my @codes = map {
        $s->ua->get($s->url('/two') => {'X-K' => "k$$"})->res->code
    } 1 .. 3;
    is("@codes", '404 429 429', 'the keyed client: mk rejects');
    my $text = scrape()->body;
    my %n = map {
        my ($z, $st) = @$_;
        ("$z $st" => value($text, "linegate_ratelimit_decisions_total"
                                  . "{zone=\"$z\",status=\"$st\"}") // 0)
    } map { my $z = $_; map { [$z, $_] } qw(PASSED REJECTED) }
      qw(mk anon wide);
    is_deeply(\%n, {'mk PASSED' => 1, 'mk REJECTED' => 2,
                    'anon PASSED' => 0, 'anon REJECTED' => 0,
                    'wide PASSED' => 3, 'wide REJECTED' => 0},
              'anon (its key empty) decided nothing, wide admitted all')
        or diag explain \%n;
};

subtest 'kept across a reload' => sub {
    my $series = 'linegate_http_answers_total{api="line_request_create",'
        . 'class="2xx"}';
    my $before = value(scrape()->body, $series);
    cmp_ok($before, '>', 0, 'counted before');
    my $from = length $s->error_log;
    kill 'HUP', $s->{pids}{nginx};
    ok($s->wait_redis_connected($from, 30), 'new workers up');
    is(value(scrape()->body, $series), $before, 'the same after a reload');
    my $node = '127.0.0.1:' . $s->redis_port;
    my $connected = qq{linegate_redis_connected{node="$node"}};
    my $n;
    for (1 .. 400) {    # the old workers take their connections away
        $n = value($s->ua->get($s->url('/metrics'))->res->body, $connected);
        last if $n == 2;
        sleep 0.05;
    }
    is($n, 2, 'connected: the two new workers, not the cache\'s helpers');
};

subtest 'a webhook event by type and result' => sub {
    my $res = $s->stub(POST => '/_stub/webhook', {
        url => $s->url('/webhooks/stripe'),
        type => 'customer.subscription.updated',
        object => {id => 'sub_m', customer => 'cus_m', status => 'active',
                   metadata => {}, items => {data => []}},
    });
    ok(defined $res, 'webhook delivered');
    like(scrape()->body,
         qr/^linegate_webhook_events_total\{type="customer\.subscription\.updated",result="\dxx"\} 1$/m,
         'counted by type and result');

    # ~250 event types at Stripe: only those linegate handles get their
    # own series, any other counts as "other"
    for my $type (qw(charge.succeeded payment_intent.created nodot)) {
        my $res = $s->stub(POST => '/_stub/webhook', {
            url => $s->url('/webhooks/stripe'), type => $type,
            object => {id => 'ch_m'},
        });
        ok(defined $res, "$type delivered");
    }
    my $body = scrape()->body;
    like($body,
         qr/^linegate_webhook_events_total\{type="other",result="2xx"\} 3$/m,
         'other types counted as "other"');
    unlike($body, qr/type="(?:charge\.|payment_intent\.|nodot)/,
           'no series of their own');
};

# A worker that dies without closing its connections (a crash, kill -9)
# takes nothing off linegate_redis_connected; before, the gauge kept it
# for the zone's life (reloads too): 4 after both workers were killed.
# The master starts the replacement in the dead one's process slot, and
# it takes off what the slot held.
subtest 'workers killed: the gauge counts the live ones' => sub {
    my $connected = 'linegate_redis_connected{node="127.0.0.1:'
        . $s->redis_port . '"}';
    # the workers only: the proxy cache's helpers are children too
    my $kill = sub {
        my $master = $s->{pids}{nginx};
        my @w = map { /^\s*(\d+)\s+nginx: worker process/ ? $1 : () }
                split /\n/, `ps -o pid=,args= --ppid $master`;
        my $from = length $s->error_log;
        kill 'KILL', @w;
        ok(@w == 2 && $s->wait_redis_connected($from, 30),
           'both workers killed (SIGKILL), both replaced and connected');
    };
    is(value(scrape()->body, $connected), 2, 'two workers connected');
    $kill->();
    is(value(scrape()->body, $connected), 2, 'the two new ones counted');
    $kill->();
    my $text = scrape()->body;
    is(value($text, $connected), 2, 'still two');
    promtool_ok($text, 'after killed workers');
};

# docs/operator.md, "Metrics": its table lists every family the code
# has (src/ngx_http_linegate_metrics.c) with its type, and no other, and
# every family a scrape shows is in it
subtest 'every family is documented, with its type' => sub {
    my $code = LG::Docs::metric_families_in_code();
    my $doc = LG::Docs::metric_families_in_docs();
    ok(keys %$code >= 13, scalar(keys %$code) . ' families in the code');
    is_deeply($doc, $code, 'docs/operator.md\'s table: the same families '
                           . 'and types');
    my %shown = scrape()->body =~ /^# TYPE (\S+) (\S+)$/mg;
    ok(keys %shown >= 10, scalar(keys %shown) . ' families shown');
    my @undoc = grep { ($doc->{$_} // '') ne $shown{$_} } sort keys %shown;
    ok(!@undoc, 'each one shown is documented, with its type')
        or diag("@undoc");
};

# The last: the metrics zone goes with the last "linegate_api" location,
# and nginx's master unmaps it. The new workers counted into the old
# zone on their first Redis connection (a worker's crash, respawned and
# crashing again, thousands a second); linegate_limit still uses Redis.
subtest 'a reload to a configuration without any linegate_api' => sub {
    my $from = length $s->error_log;
    {
        open my $fh, '>', $s->prefix . '/nginx.conf' or die $!;
        print $fh $s->render(api => 0, HTTP_EXTRA => $HTTP_EXTRA,
            SERVER_EXTRA => 'location = /limited { linegate_limit zone=m1; '
                            . 'try_files /nothing-here =404; }');
        close $fh;
    }
    kill 'HUP', $s->{pids}{nginx};
    ok($s->wait_redis_connected($from, 30), 'new workers connected');
    my @codes = map { $s->ua->get($s->url('/limited'))->res->code } 1 .. 4;
    ok(!grep({ $_ != 404 && $_ != 429 } @codes),
       "linegate_limit answers (@codes)");
    sleep 1;    # a new worker counted at its connection, then crashed
    unlike(substr($s->error_log, $from), qr/exited on signal/,
           'no worker crashed');
};

# The series table is read without a lock: a reader that sees an
# entry's ready flag must not read its fields (family, labels) before
# the flag. x86 keeps loads in order, arm64 (a Debian nginx architecture)
# does not, so no test run here can catch a missing barrier; this reads
# the source instead: every read of ->ready in the code is followed by
# ngx_memory_barrier() before the entry is used, and the writer's store
# preceded by one. Before, lookup() and the scrape had none.
subtest 'the ready flag is read with a barrier (weakly ordered CPUs)' => sub {
    my $file = "$LG::Stack::ROOT/src/ngx_http_linegate_metrics.c";
    open my $fh, '<', $file or die "$file: $!";
    my @lines = <$fh>;
    my ($reads, $writes) = (0, 0);
    for my $i (0 .. $#lines) {
        my $l = $lines[$i];
        next if $l =~ m{^\s*(?:/?\*|//)};    # comments
        next unless $l =~ /(?:->|\.)ready\b/;
        my $near = join '', grep { defined } @lines[$i + 1 .. $i + 12];
        my $before = join '', grep { defined } @lines[$i - 2 .. $i - 1];
        if ($l =~ /ready\s*=[^=]/) {
            $writes++;
            like($before, qr/ngx_memory_barrier\(\)/,
                 'line ' . ($i + 1) . ': a barrier before publishing');
        }
        else {
            $reads++;
            like($near, qr/ngx_memory_barrier\(\)/,
                 'line ' . ($i + 1) . ': a barrier after reading ready');
        }
    }
    cmp_ok($reads, '>=', 2, "$reads reads of ready");
    is($writes, 1, 'one store');
};

# A scrape's buffer is sized to the series it prints, and the text is
# whole however many there are: before, every scrape allocated the worst
# case of the table (1,024 histograms: 3,747,840 bytes). nginx's debug
# log of the scrape's location shows its allocations ("malloc:
# ADDR:SIZE", nginx built --with-debug); 1,100 linegate_limit zones,
# each decided once, fill the table past its 1,024 series.
subtest 'a scrape sized to the live series, whole when the table is full' => sub {
    my $zones = 1100;
    my $m = LG::Stack->new(
        HTTP_EXTRA => join(' ', map {
            "linegate_limit_zone z$_ key=\$remote_addr rate=1r/m;"
        } 1 .. $zones),
        SERVER_EXTRA => join(' ', map {
            "location = /z$_ { linegate_limit zone=z$_; "
            . 'try_files /nothing-here =404; }'
        } 1 .. $zones) . ' location = /metrics-sized { linegate_api metrics;'
          . ' error_log scrape-debug.log debug; }',
    )->start;
    my $log = $m->prefix . '/scrape-debug.log';

    # the largest allocation of one scrape (0: none beyond the request's
    # pool), whether nginx logged at debug level at all, and the answer
    my $scrape = sub {
        my $from = -s $log // 0;
        my $res = $m->ua->get($m->url('/metrics-sized'))->res;
        my ($max, $debug) = (0, 0);
        open my $fh, '<', $log or return (0, 0, $res);
        seek $fh, $from, 0;
        while (<$fh>) {
            $debug = 1 if /\[debug\]/;
            $max = $1 if /\bmalloc: [0-9A-Fa-fx]+:(\d+)/ && $1 > $max;
        }
        return ($max, $debug, $res);
    };

    my ($max, $debug, $res) = $scrape->();
    is($res->code, 200, 'scraped');
  SKIP: {
        skip 'nginx without --with-debug: no allocations logged', 1
            unless $debug;
        cmp_ok($max, '<', 64 * 1024, "a few series: the largest allocation $max bytes");
    }

    my @codes = map { $m->ua->get($m->url("/z$_"))->res->code } 1 .. $zones;
    is(scalar(grep { $_ == 404 } @codes), $zones, "$zones zones decided");

    ($max, $debug, $res) = $scrape->();
    my $text = $res->body;
  SKIP: {
        skip 'nginx without --with-debug: no allocations logged', 1
            unless $debug;
        cmp_ok($max, '<', 1024 * 1024, "a full table: the largest allocation $max bytes");
    }
    like($text, qr/\nlinegate_metrics_dropped_total [1-9]\d*\n\z/,
         'whole: it ends with the dropped updates, some');
    # one line per series (a histogram: its _count), besides the
    # families without labels shown at 0 without a series
    my @series = grep { !/^#/ && !/_(?:bucket|sum)\{/ && !/_(?:bucket|sum) /
                        && !/^linegate_metrics_dropped_total / }
                 split /\n/, $text;
    my %z = map { /zone="(z\d+)"/ ? ($1 => 1) : () } @series;
    cmp_ok(scalar @series, '>=', 1024, scalar(@series) . ' series shown');
    cmp_ok(scalar @series, '<=', 1026, 'no more than the table');
    cmp_ok(scalar keys %z, '>', 900, scalar(keys %z) . ' zones among them');
    ok(!grep({ !/^[a-z_]+(?:\{[^{}]*\})? -?\d+(?:\.\d+)?$/ } @series),
       'each a whole line');
    promtool_ok($text, 'a full table');
    $m->stop;
};

done_testing;
