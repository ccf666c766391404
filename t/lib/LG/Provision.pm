package LG::Provision;

# Helpers for the Line Provisioning API tests (t/2*.t), on top of
# LG::Stack.
#
#   my $p = LG::Provision->new($stack);
#   my $p = LG::Provision->new($stack, known => 1);  # see _known
#   my $a = $p->account('acct_a', daily => 3, card => 1);
#   $p->inventory('+14155550100', '+14155550101');
#   my $tx = $p->preview($a);               # Mojo transaction
#   my $tx = $p->confirm($a, $token);       # {"preview_token": $token}
#   my $tx = $p->limits($a);
#   my @errors = $p->invalid($tx, 'post', '/accounts/lines/provision-confirm');
#   my $kv = $p->stored;                    # every key => its value, as text
#   my @tokens = $p->issued;                # the tokens previews answered
#
# Accounts are written straight into Redis with the layout of
# docs/data-model.md (the operator API is tested on its own), and their
# Stripe customers into the stub.

use strict;
use warnings;

use Carp qw(croak);
use LG::OpenAPI qw(answer_matches);
use LG::Stack ();
use Digest::SHA qw(sha256_hex);
use Exporter 'import';
use LG::Test qw(answer_is);
use Mojo::IOLoop;
use Mojo::JSON qw(decode_json);
use Mojo::Promise;
use Test::More;
use Time::HiRes ();

our @EXPORT_OK = qw(now_ms);

our $PREVIEW = '/accounts/lines/provision-preview';
our $CONFIRM = '/accounts/lines/provision-confirm';
our $LIMITS  = '/accounts/limits';

sub new {
    my ($class, $stack, %o) = @_;
    return bless {s => $stack, n => 0, known => $o{known}}, $class;
}

# known => 1: before each call, GET /accounts/limits (which writes
# nothing) until every worker has seen the store accept the credentials,
# so that preview and limits take the plain commands of the worker's
# cache instead of the script (src/ngx_http_linegate_provision_plain.c).
sub _known {
    my ($self, $headers) = @_;
    return unless $self->{known};
    my $ua = $self->{s}->ua;
    $ua->start($ua->build_tx(GET => $self->{s}->url($LIMITS) => $headers))
        for 1 .. 4;
}

sub stack { $_[0]{s} }
sub redis { $_[0]{s}->redis }

sub now_ms { return int(Time::HiRes::time() * 1000) }

# An account with credentials. Options: plan (inbound_only), daily,
# monthly (absent: the configured defaults), card (1), decline (0),
# customer (cus_<account>, '' for none), source (a default_source only).
sub account {
    my ($self, $id, %o) = @_;

    my $r = $self->redis;
    my $n = ++$self->{n};
    my $key_id = "sbk_${id}_$n";
    my $secret = "sbs_" . join '', map { ('a' .. 'z', 0 .. 9)[rand 36] }
                                   1 .. 40;
    my $customer = exists $o{customer} ? $o{customer} : "cus_$id";

    $r->del("lg:{acct:$id}");
    $r->hset("lg:{acct:$id}", plan => $o{plan} // 'inbound_only',
             key_id => $key_id);
    $r->hset("lg:{acct:$id}", stripeCustomerId => $customer)
        if length $customer;
    $r->hset("lg:{acct:$id}", daily_limit => $o{daily})
        if defined $o{daily};
    $r->hset("lg:{acct:$id}", monthly_limit => $o{monthly})
        if defined $o{monthly};
    $r->hset("lg:sbkey:$key_id", account => $id,
             secret_sha256 => sha256_hex($secret));

    if (length $customer && !$o{no_stub_customer}) {
        my $tx = $self->{s}->stub(POST => '/_stub/customers', {
            id => $customer,
            card => $o{card} // 1,
            source => $o{source} // 0,
            decline => $o{decline} // 0,
        });
        croak 'stub customer: ' . $tx->res->body
            unless $tx->res->is_success;
    }

    return {id => $id, key_id => $key_id, secret => $secret,
            customer => $customer};
}

sub headers {
    my ($self, $a) = @_;
    return {'sb-api-key-id' => $a->{key_id},
            'sb-api-secret-key' => $a->{secret}};
}

sub inventory {
    my ($self, @numbers) = @_;
    $self->redis->sadd('lg:{fleet}:inventory', @numbers) if @numbers;
    return $self->redis->scard('lg:{fleet}:inventory');
}

sub numbers {
    my ($self, $n, $base) = @_;
    return map { sprintf '+1%d%04d', $base // 415555, $_ } 0 .. $n - 1;
}

sub _tx {
    my ($self, $method, $path, $headers, @content) = @_;
    $self->_known($headers) unless $path eq $CONFIRM;
    my $ua = $self->{s}->ua;
    my $tx = $ua->start($ua->build_tx($method => $self->{s}->url($path)
                                      => $headers => @content));
    if ($path eq $PREVIEW && ($tx->res->code // 0) == 200) {
        my $b = eval { decode_json($tx->res->body) } // {};
        push @{ $self->{issued} }, $b->{preview_token}
            if ref $b eq 'HASH' && defined $b->{preview_token};
    }
    return $tx;
}

# every token a preview of this object answered: Redis holds only their
# digests (token_key), a log scan needs the tokens themselves
sub issued { return @{ $_[0]{issued} // [] } }

sub preview {
    my ($self, $a, @content) = @_;
    return $self->_tx(POST => $PREVIEW, $self->headers($a), @content);
}

# confirm($a, $token) sends {"preview_token": $token}; confirm($a, \$raw)
# sends raw bytes; confirm($a, {...}) sends that JSON.
sub confirm {
    my ($self, $a, $body) = @_;
    my @content = ref $body eq 'SCALAR' ? ($$body)
                : ref $body              ? (json => $body)
                : (json => {preview_token => $body});
    return $self->_tx(POST => $CONFIRM, $self->headers($a), @content);
}

sub limits {
    my ($self, $a) = @_;
    return $self->_tx(GET => $LIMITS, $self->headers($a));
}

# a token from a successful preview
sub token {
    my ($self, $a) = @_;
    my $tx = $self->preview($a);
    my $b = eval { decode_json($tx->res->body) } // {};
    croak 'preview failed: ' . $tx->res->code . ' ' . $tx->res->body
        unless $tx->res->code == 200 && $b->{preview_token};
    return $b->{preview_token};
}

# a token once every worker answers again (connected to Redis after a
# reload or a restart): 8 limits GETs in a row answered 200, for at most
# 30 s
sub token_once_answering {
    my ($self, $a) = @_;
    my $until = Time::HiRes::time() + 30;
    my $ok = 0;
    while ($ok < 8 && Time::HiRes::time() < $until) {
        $ok = $self->limits($a)->res->code == 200 ? $ok + 1 : 0;
        Time::HiRes::sleep(0.05) unless $ok;
    }
    return $self->token($a);
}

# Run the given request builders at once (non-blocking, one connection
# each), return their transactions in order.
sub parallel {
    my ($self, @reqs) = @_;

    my $ua = Mojo::UserAgent->new(
        connect_timeout => 10, inactivity_timeout => 20,
        request_timeout => 20, max_connections => 0,
    );
    my @p = map {
        my ($method, $path, $headers, @content) = @$_;
        $ua->start_p($ua->build_tx($method => $self->{s}->url($path)
                                   => $headers => @content));
    } @reqs;

    my @txs;
    Mojo::Promise->all(@p)->then(sub { @txs = map { $_->[0] } @_ })
        ->catch(sub { croak "parallel: @_" })->wait;

    return @txs;
}

# a preview, for parallel() or during()
sub preview_req {
    my ($self, $a) = @_;
    return [POST => $PREVIEW, $self->headers($a)];
}

sub confirm_req {
    my ($self, $a, $token) = @_;
    return [POST => $CONFIRM, $self->headers($a),
            json => {preview_token => $token}];
}

# the stub's state: {subscriptions => {...}, log => [...], ...}
sub stub_state {
    my ($self) = @_;
    return $self->{s}->stub(GET => '/_stub/state')->res->json;
}

# the stub's log entries for $path since the last stub_calls or
# stub_mark (the stub's log: every Stripe call linegate made)
sub stub_calls {
    my ($self, $path) = @_;
    my $log = $self->stub_state->{log} // [];
    my $seen = $self->{stub_seen} // 0;
    my @new = grep { $_->{path} eq $path } @$log[$seen .. $#$log];
    $self->{stub_seen} = @$log;
    return @new;
}

sub stub_mark {
    my ($self) = @_;
    $self->{stub_seen} = @{ $self->stub_state->{log} // [] };
}

sub subscriptions {
    my ($self) = @_;
    return values %{ $self->stub_state->{subscriptions} // {} };
}

sub fault {
    my ($self, %f) = @_;
    my $tx = $self->{s}->stub(POST => '/_stub/faults', {
        method => 'POST', path_prefix => '/v1/subscriptions', count => 1,
        %f,
    });
    croak 'fault: ' . $tx->res->body unless $tx->res->is_success;
}

sub clear_faults {
    my ($self) = @_;
    $self->{s}->stub(DELETE => '/_stub/faults');
}

# the account's recorded lines: {worker_id => {phone_number, ...}}
sub lines {
    my ($self, $id) = @_;
    my $r = $self->redis;
    my %l;
    for my $k ($r->keys("lg:{acct:$id}:line:*")) {
        (my $w = $k) =~ s/.*:line://;
        $l{$w} = {$r->hgetall($k)};
    }
    return \%l;
}

# the preview token's key, lg:pv:{<tag>}:<digest>: the tag is the
# token's 3 characters after "lpv_", the digest its SHA-256 in hex (the
# account is in its JSON)
sub token_key {
    my ($self, $a, $token) = @_;
    my $tag = substr($token, 4, 3);
    return "lg:pv:{$tag}:" . sha256_hex($token);
}

# Every key of the store (on a cluster, of every master: KEYS is their
# union) with its value as text, whatever its type: {name => text}, for
# a test that looks for a secret anywhere in Redis. A key gone between
# KEYS and its read (expired) is left out.
sub stored {
    my ($self) = @_;
    my $r = $self->redis;
    my %read = (
        string => sub { $r->get($_[0]) },
        hash   => sub { join "\n", $r->hgetall($_[0]) },
        set    => sub { join "\n", $r->smembers($_[0]) },
        zset   => sub { join "\n", $r->zrange($_[0], 0, -1, 'WITHSCORES') },
        list   => sub { join "\n", $r->lrange($_[0], 0, -1) },
        stream => sub {
            join "\n", map { ($_->[0], @{ $_->[1] }) }
                       $r->xrange($_[0], '-', '+');
        },
    );
    my %kv;
    for my $k ($r->keys('*')) {
        my $type = $r->type($k);
        next if $type eq 'none';
        my $read = $read{$type} or croak "key $k: type $type not read";
        $kv{$k} = $read->($k) // '';
    }
    return \%kv;
}

sub reservations {
    my ($self, $id) = @_;
    return [$self->redis->keys("lg:{acct:$id}:resv:*")];
}

# A purchase that ended without a line left nothing held: its limit
# slot, its reservation, its line (each file then checks the numbers in
# its own way)
sub nothing_held {
    my ($self, $id, $name) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    Test::More::is($self->redis->zcard("lg:{acct:$id}:prov"), 0,
                   "$name: slot freed");
    Test::More::is_deeply($self->reservations($id), [],
                          "$name: no reservation");
    Test::More::is_deeply($self->lines($id), {}, "$name: no line");
}

sub counted {
    my ($self, $id) = @_;
    return {$self->redis->zrange("lg:{acct:$id}:prov", 0, -1,
                                 'WITHSCORES')};
}

# Where the numbers are (docs/data-model.md): each one in exactly one of
# the inventory, a claim of lg:{fleet}:pv:inflight ("<A> <worker>
# <number>"), an account's line (phone_number), or a pending reconcile
# entry that holds it (record_failed, worker_lost: the reservation was
# kept; the other reasons' numbers went back when they were queued).
# The sum of the four: a number lost makes it smaller, one held twice
# larger. (Call it where no line is of the wrong type.)
sub accounted {
    my ($self) = @_;
    my $r = $self->redis;
    my @lines = grep { $r->type($_) eq 'hash'
                       && defined $r->hget($_, 'phone_number') }
                $r->keys('lg:{acct:*}:line:*');
    my @held = grep { ($_->{reason} // '') =~ /^(record_failed|worker_lost)$/
                      && length($_->{phone_number} // '') }
               @{ $self->reconcile };
    # a claim whose line holds its number (the record's answer was lost:
    # the sweep settles the claim) is that line's, counted once; an
    # intent ("<A> <worker> -") holds none
    my @claims = grep {
        my ($acct, $w, $n) = split / /;
        $n ne '-'
        && ($r->hget("lg:{acct:$acct}:line:$w", 'phone_number') // '') ne $n;
    } $r->zrange('lg:{fleet}:pv:inflight', 0, -1);
    return $r->scard('lg:{fleet}:inventory') + @lines + @claims + @held;
}

# every one of the $total numbers the test put in is in the inventory,
# a line, a claim or a reconcile entry (accounted): never lost
sub numbers_accounted {
    my ($self, $name, $total) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    Test::More::is($self->accounted, $total, "$name: no number lost");
}

# a purchase of $id ended without a line: nothing held, no number lost
sub released {
    my ($self, $id, $name, $total) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    $self->nothing_held($id, $name);
    $self->numbers_accounted($name, $total);
}

# the claims of an account: [[worker, number], ...] (not its intents)
sub claims {
    my ($self, $id) = @_;
    return [map { [(split / /)[1, 2]] }
            grep { /^\Q$id\E / && !/ -$/ }
            $self->redis->zrange('lg:{fleet}:pv:inflight', 0, -1)];
}

# the intents of an account ("<A> <worker> -": a confirm that has not
# claimed a number yet): [worker, ...]
sub intents {
    my ($self, $id) = @_;
    return [map { (split / /)[1] }
            grep { /^\Q$id\E \S+ -$/ }
            $self->redis->zrange('lg:{fleet}:pv:inflight', 0, -1)];
}

sub reconcile {
    my ($self) = @_;
    my @e = $self->redis->xrange('lg:{fleet}:reconcile', '-', '+');
    return [map { +{ @{ $_->[1] } } } @e];
}

# the account's subscriptions at the stub (metadata account_id)
sub subs_of {
    my ($self, $id) = @_;
    return grep { ($_->{metadata}{account_id} // '') eq $id }
           $self->subscriptions;
}

# the account's entries waiting on lg:{fleet}:reconcile
sub queued_of {
    my ($self, $id) = @_;
    return grep { ($_->{account} // '') eq $id } @{ $self->reconcile };
}

# POST /_linegate/reconciliation/run: answered $status (200) and matching
# docs/openapi.yaml; its JSON
sub reconcile_run {
    my ($self, $status) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    my $tx = $self->{s}->op(POST => '/reconciliation/run');
    Test::More::is($tx->res->code, $status // 200,
                   'run answered ' . ($status // 200))
        or Test::More::diag($tx->res->body);
    my @errors = $self->invalid($tx);
    Test::More::ok(!@errors, 'run: its answer matches docs/openapi.yaml')
        or Test::More::diag(join "\n", @errors);
    return $tx->res->json // {};
}

# a run's answer's entry of the account, or {}
sub entry_of {
    my ($self, $b, $account) = @_;
    my ($e) = grep { ($_->{account} // '') eq $account }
              @{ $b->{entries} // [] };
    return $e // {};
}

# The OpenAPI document (LG::OpenAPI), and a response checked against it:
# the errors (empty when the answer matches).
sub openapi { return LG::OpenAPI::document() }

sub invalid {
    my ($self, $tx, $method, $path) = @_;
    return LG::OpenAPI::invalid($tx, $method, $path);
}

# answer_is, then the answer checked against docs/openapi.yaml
sub answer {
    my ($self, $tx, $status, $name) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;

    my $body = answer_is($tx, $status, $name);
    answer_matches($tx, $name);

    return $body // {};
}

# SPEC 3.1's error body, with its code (undef: no "error" field)
sub error_is {
    my ($self, $tx, $status, $code, $name, $message_re) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;

    my $b = $self->answer($tx, $status, $name);
    is($b->{status}, 'ERROR', "$name: status ERROR");
    is($b->{error}, $code, "$name: error " . ($code // 'absent'));
    ok(!defined $code || exists $b->{error}, "$name: error present")
        if defined $code;
    ok(defined $code || !exists $b->{error}, "$name: no error field")
        unless defined $code;
    like($b->{message} // '', $message_re // qr/./, "$name: message");

    return $b;
}

# Start a request without waiting, run $poll every 10 ms until it returns
# true (at most $timeout s), then wait for the answer.
sub during {
    my ($self, $req, $poll, $timeout) = @_;

    my ($method, $path, $headers, @content) = @$req;
    my $ua = $self->{s}->ua;
    my $tx;
    my $p = $ua->start_p($ua->build_tx($method => $self->{s}->url($path)
                                       => $headers => @content))
        ->then(sub { $tx = shift },
               # the connection closed unanswered (a worker killed on
               # purpose): no $tx, which the caller checks
               sub { undef $tx });

    my $polled = 0;
    my $until = Time::HiRes::time() + ($timeout // 5);
    my $id = Mojo::IOLoop->recurring(0.01 => sub {
        return if $polled;
        $polled = 1 if $poll->() || Time::HiRes::time() > $until;
    });
    $p->wait;
    Mojo::IOLoop->remove($id);

    return ($tx, $polled);
}

1;
