# linegate_redis_wait whose WAIT Redis answers with an error (an ACL user
# without +wait: NOPERM; a proxy that does not know WAIT). Before, the
# error was read as "acknowledged by 0 of 1 replicas": the log never
# named it, the metric said kind="unacknowledged", and a durable write
# (a confirm's reservation release) was sent again for ever (EVALSHA
# after EVALSHA), filling the queue. Now the log names the error and
# WAIT, and the durable write is given up on with the alert a refused
# script gets.
use strict;
use warnings;
use lib 't/lib';

use Test::More;
use Time::HiRes qw(sleep);
use LG::Stack;
use LG::Test;
use LG::Lines qw(body);
use LG::Provision;

my $s = LG::Stack->new(redis => 'sentinel', WORKERS => 1,
                       HTTP_EXTRA => 'linegate_redis_wait 1 250ms;')->start;
my $l = LG::Lines->new($s);
ok($s->wait_sentinels_ready(30, 1), 'the sentinels see a replica in sync')
    or BAIL_OUT('no replica');
$s->follow_master;
my $r = $s->redis;
my $port = $s->redis_port;
my $p = LG::Provision->new($s);
$p->inventory($p->numbers(5));
my $acct = $p->account('acct_acl');
my $tok = $p->token($acct);
my $w = $l->workspace('org_waitacl', plan => 'mini', customer => '');
is($l->list($w)->res->code, 200, 'the workspace\'s key known');

my $calls = sub {
    my ($cmd) = @_;
    ($r->info('commandstats')->{"cmdstat_$cmd"} // '') =~ /calls=(\d+)/;
    return $1 // 0;
};
my $metric = sub {
    my ($kind) = @_;
    $s->ua->get($s->url('/metrics'))->res->body
        =~ /^linegate_redis_errors_total\{kind="$kind"\} (\d+)/m;
    return $1 // 0;
};

# linegate's user (default) may no longer run WAIT
like(qx{redis-cli -p $port ACL SETUSER default -wait 2>&1}, qr/OK/,
     'WAIT refused to linegate\'s user');
my $from = length $s->error_log;

my $tx = $l->create($w, body(channelType => 'email', email => 'a@example.com'),
                    'Idempotency-Key' => 'acl-1');
is($tx->res->code, 503, 'a creation: 503 (its commit not acknowledged)');
my $log = substr $s->error_log, $from;
like($log, qr/redis error: "NOPERM[^"]*wait[^"]*" on WAIT after lr_create/,
     'the log names the error and WAIT');
unlike($log, qr/acknowledged by 0 of 1 replicas/,
       'not "acknowledged by 0 of 1 replicas"');
is($metric->('unacknowledged'), 0, 'not counted as unacknowledged');

# a confirm: pv_claim's WAIT refused, its reservation released by a
# durable write (pv_release, acknowledged) whose WAIT is refused too
$from = length $s->error_log;
$tx = $p->confirm($acct, $tok);
is($tx->res->code, 503, 'a confirm: 503');
my $evals;
for (1 .. 20) {
    $evals = $calls->('evalsha') + $calls->('eval');
    last if (substr $s->error_log, $from) =~ /durable write .*given up/;
    sleep 0.25;
}
$log = substr $s->error_log, $from;
like($log, qr/\[alert\].*durable\ write\ "a\ reservation's\ release"
               \ refused\ by\ redis:\ "NOPERM[^"]*"\ on\ its\ WAIT/x,
     'the durable release: the refused alert');
# The alert is logged as the WAIT's error is read: a write still in
# flight then (another step of the confirm's ending) may land after it,
# and counted at the alert it made 11 EVALSHAs of 10 on a loaded box.
# So the count is taken once it has held for 1 s (10 s at most). Still
# strict: a durable write sent again for ever is resent every 1.6 s at
# most (the retry's backoff), so it is seen within the 4 s that follow
# whether or not the count happened to hold for 1 s.
my ($held, $until) = (0, time + 10);
while ($held < 4 && time < $until) {
    sleep 0.25;
    my $now = $calls->('evalsha') + $calls->('eval');
    $held = $now == $evals ? $held + 1 : 0;
    $evals = $now;
}
sleep 4;
is($calls->('evalsha') + $calls->('eval'), $evals,
   'the durable write is not sent again (no EVALSHA in 4 s)');
unlike(substr($s->error_log, $from), qr/replicas within .* will retry/,
       'no "will retry"');

# WAIT allowed again: acknowledged writes commit and answer
like(qx{redis-cli -p $port ACL SETUSER default +wait 2>&1}, qr/OK/,
     'WAIT allowed again');
$tx = $l->create($w, body(channelType => 'email', email => 'a@example.com'),
                 'Idempotency-Key' => 'acl-1');
is($tx->res->code, 201, 'the creation\'s retry: 201')
    or diag($tx->res->body);

done_testing;
