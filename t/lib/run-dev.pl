#!/usr/bin/perl
# make run: the development stack in the foreground. Starts Redis, the
# Stripe stub and nginx with the module (t/lib/LG/Stack.pm), seeds a demo
# workspace, account and inventory through the operator API, prints the
# credentials and curl examples, and runs until Ctrl-C.
#
# LG_REDIS=sentinel: a master, 2 replicas and 3 sentinels; LG_REDIS=cluster:
# a Redis Cluster (3 masters, 3 replicas), with a linegate_limit demo
# location besides: the same demo data and credentials on either.
#
# Environment:
#   LG_PORT            nginx port (8080)
#   LG_REDIS_PORT      Redis port (6390; on a cluster, its first node)
#   LG_REDIS           sentinel or cluster (default: one Redis)
#   LG_STUB_PORT       Stripe stub port (12111)
#   LG_OPERATOR_TOKEN  operator token (dev-operator-token-change-me)
#   LG_MODULE, NGINX   as for the tests

use strict;
use warnings;

use FindBin;
use lib $FindBin::Bin;

use IO::Socket::INET;
use LG::Stack;

my $port       = $ENV{LG_PORT}       || 8080;
my $redis_port = $ENV{LG_REDIS_PORT} || 6390;
my $stub_port  = $ENV{LG_STUB_PORT}  || 12111;
my $token      = $ENV{LG_OPERATOR_TOKEN} // 'dev-operator-token-change-me';

$| = 1;

my $stop = 0;
$SIG{INT} = $SIG{TERM} = sub { $stop = 1 };

for my $p ([$port, 'LG_PORT'], [$redis_port, 'LG_REDIS_PORT'],
           [$stub_port, 'LG_STUB_PORT']) {
    my $probe = IO::Socket::INET->new(LocalAddr => '127.0.0.1',
                                      LocalPort => $p->[0], Proto => 'tcp',
                                      Listen => 1, ReuseAddr => 1)
        or die "port $p->[0] is in use: choose another with $p->[1]=...\n";
    close $probe;
}

my $cluster = ($ENV{LG_REDIS} // '') eq 'cluster';

# a cluster: one limited location (proxied to /static: a "return" would
# answer before the limit)
my %limit_demo = (
    HTTP_EXTRA   => 'linegate_limit_zone demo key=$binary_remote_addr '
                    . 'rate=2r/s burst=4;',
    SERVER_EXTRA => 'location = /limited { linegate_limit zone=demo; '
                    . 'proxy_pass http://127.0.0.1:@PORT@/static; }',
);

# lg:{fleet}:reconcile settled without an operator (docs/operator.md)
my $auto = 'linegate_reconcile_auto '
         . 'http://127.0.0.1:@PORT@/_linegate/ interval=30s;';

my $s = LG::Stack->new(
    port           => $port,
    redis_port     => $redis_port,
    stub_port      => $stub_port,
    OPERATOR_TOKEN => $token,
    WEBHOOK_SECRET => 'whsec_dev_linegate_' . LG::Stack::random_token(24),
    HTTP_EXTRA     => $auto,
    ($cluster ? (%limit_demo,
                 HTTP_EXTRA => "$auto $limit_demo{HTTP_EXTRA}") : ()),
)->start;

# LG_REDIS=sentinel or cluster: where the other servers listen
my $topology = $s->topology eq 'sentinel' ? sprintf(
    "\n  (Sentinel)      master lgmaster; replicas %s; sentinels %s"
    . "\n                  redis-cli -p %d sentinel get-master-addr-by-name "
    . "lgmaster",
    join(',', $s->replica_ports), join(',', $s->sentinel_ports),
    ($s->sentinel_ports)[0])
  : $cluster ? sprintf(
    "\n  (Cluster)       masters %s; replicas %s"
    . "\n                  redis-cli -p %d cluster nodes",
    join(',', $s->cluster_masters), join(',', $s->cluster_replicas),
    ($s->cluster_masters)[0])
  : '';

# one seeding step: the call must answer $want, its JSON body is returned
sub step {
    my ($want, $what, $tx) = @_;
    my $code = $tx->res->code // 'no answer';
    die "seeding failed: $what: $code " . ($tx->res->body // '') . "\n"
        unless $code eq $want;
    return $tx->res->json;
}

step(200, 'stub customer cus_demo',
     $s->stub(POST => '/_stub/customers', {id => 'cus_demo', card => \1}));
step(200, 'stub customer cus_demo_agent',
     $s->stub(POST => '/_stub/customers',
              {id => 'cus_demo_agent', card => \1}));

my $key = do {
    step(200, 'workspace org_demo',
         $s->op(PUT => '/workspaces/org_demo',
                {plan => 'growth', subscriptionStatus => 'active',
                 stripeCustomerId => 'cus_demo'}));
    step(201, 'API key', $s->op(POST => '/workspaces/org_demo/keys'));
};

step(200, 'account acct_demo',
     $s->op(PUT => '/accounts/acct_demo',
            {plan => 'inbound_only', stripeCustomerId => 'cus_demo_agent'}));
my $cred = step(201, 'credentials',
                $s->op(POST => '/accounts/acct_demo/credentials'));

my $inv = step(200, 'inventory',
               $s->op(POST => '/inventory',
                      {numbers => [map { "+1415555010$_" } 0 .. 4]}));

my $lg   = $s->url('');
my $stub = $s->stub_url;
my $logs = $s->prefix;

print <<"TEXT";

linegate development stack (Ctrl-C stops it)

  linegate        $lg
  operator token  $token
  workspace       org_demo (growth, active, Stripe customer cus_demo)
    API key       $key->{key}   ($key->{keyId})
  account         acct_demo (inbound_only, Stripe customer cus_demo_agent)
    key id        $cred->{key_id}
    secret        $cred->{secret}
  inventory       $inv->{total} numbers
  Stripe stub     $stub   (state: curl -s $stub/_stub/state)
  Redis           redis-cli@{[$cluster ? ' -c' : '']} -p $redis_port$topology
  logs            $logs/error.log, $logs/access.log

Try, in another shell:

export LG=$lg STUB=$stub
export KEY=$key->{key} OP=$token
export SBK=$cred->{key_id} SBS=$cred->{secret}

# an included phone line (growth includes two)
curl -s -X POST \$LG/api/line-requests -H "Authorization: Bearer \$KEY" \\
  -H 'Content-Type: application/json' \\
  -d '{"firstName":"Ada","lastName":"Lovelace","channelType":"phone"}'

# a paid email line: note its line._id and invoiceId
curl -s -X POST \$LG/api/line-requests -H "Authorization: Bearer \$KEY" \\
  -H 'Content-Type: application/json' \\
  -d '{"firstName":"Grace","lastName":"Hopper","channelType":"email","email":"grace\@example.com"}'
export ID=<line._id> INV=<invoiceId>

# pay it "on the hosted page"; the stub sends the signed webhook
curl -s -X POST \$STUB/_stub/invoices/\$INV/pay \\
  -d "{\\"webhook_url\\":\\"\$LG/webhooks/stripe\\"}"

# poll it: provisioning / paid
curl -s \$LG/api/line-requests/\$ID -H "Authorization: Bearer \$KEY"

# set-up finished: mark it active (operator API)
curl -s -X POST \$LG/_linegate/lines/\$ID/active -H "Authorization: Bearer \$OP"

# every line of the workspace; what waits for set-up
curl -s \$LG/api/lines/by-user -H "Authorization: Bearer \$KEY"
curl -s \$LG/_linegate/provisioning -H "Authorization: Bearer \$OP"

# an inbound-only line for the Agent account: preview, then confirm
curl -s -X POST \$LG/accounts/lines/provision-preview \\
  -H "sb-api-key-id: \$SBK" -H "sb-api-secret-key: \$SBS"
curl -s -X POST \$LG/accounts/lines/provision-confirm \\
  -H "sb-api-key-id: \$SBK" -H "sb-api-secret-key: \$SBS" \\
  -H 'Content-Type: application/json' -d '{"preview_token":"<lpv_...>"}'

# the account's limits
curl -s \$LG/accounts/limits -H "sb-api-key-id: \$SBK" -H "sb-api-secret-key: \$SBS"

# purchases whose Stripe and Redis sides disagree: what waits, a run now
# (a worker also runs one every 30 s), and what runs settled
curl -s \$LG/_linegate/reconciliation -H "Authorization: Bearer \$OP"
curl -s -X POST \$LG/_linegate/reconciliation/run -H "Authorization: Bearer \$OP"
curl -s \$LG/_linegate/reconciliation/resolved -H "Authorization: Bearer \$OP"

TEXT

cluster_demo() if $cluster;

wait_for_stop();

# LG_REDIS=cluster: where keys live, and the limited location
sub cluster_demo {
    my $lg = $s->url('');
    my $first = ($s->cluster_masters)[0];
    print <<"TEXT";
On the cluster, besides:

# where each key lives: the workspace's keys share its tag's slot, the
# account's its own, the fleet's (inventory, journals) another
redis-cli -c -p $first cluster keyslot 'lg:{ws:org_demo}'
redis-cli -c -p $first cluster keyslot 'lg:{acct:acct_demo}'
redis-cli -c -p $first cluster keyslot 'lg:{fleet}:inventory'

# 5 pass (burst 4 + 1), then 429 with Retry-After
for i in 1 2 3 4 5 6 7; do curl -s -o /dev/null -w '%{http_code} ' $lg/limited; done; echo
curl -si $lg/limited | grep -i -e ratelimit -e retry-after

# the limit's key, on the master of its slot
redis-cli --cluster call 127.0.0.1:$first keys 'lg:rl:*'

TEXT
}

# runs until Ctrl-C or a child's end, then stops everything; exits
sub wait_for_stop {
    until ($stop) {
        sleep 1;
        if (my @dead = $s->dead) {
            print STDERR "stopped on its own: @dead\n";
            print STDERR $s->_log_tail;
            $s->stop;
            exit 1;
        }
    }

    print "\nstopping\n";
    $s->stop;
    exit 0;
}
