package LG::Lines;

# Helpers for the Lines API tests (t/1*.t), on top of LG::Stack.
#
#   my $l = LG::Lines->new($stack);
#   my $w = $l->workspace('org_a', plan => 'growth');   # + key, customer
#   my $tx = $l->create($w, {channelType => 'phone'});  # a full body
#   my $b = $l->answer($tx, 201, 'created');  # status, headers, OpenAPI
#   my $tx = $l->get($w, $id);  $l->manage($w, $id, 'cancel');
#   my $tx = $l->list($w);      $l->check($w, $id);     # Clerk for check
#   my @txs = $l->parallel([$w, POST => '/api/line-requests', {...}], ...);
#
# Workspaces and keys go through the operator API (PUT
# /_linegate/workspaces/W, POST .../keys), Stripe customers into the stub.
# A workspace is a hash: {id, key, auth (API key headers), clerk (Clerk
# token headers), customer}.

use strict;
use warnings;

use Carp qw(croak);
use Exporter 'import';
use IO::Socket::INET ();
use LG::OpenAPI qw(answer_matches);
use LG::Stack ();
use LG::Test qw(answer_is eventually reads_as same_data);
use Mojo::IOLoop;
use Mojo::JSON qw(decode_json);
use Mojo::Promise;
use Test::More;
use Time::HiRes ();

our @EXPORT_OK = qw(body);

our $CREATE = '/api/line-requests';

sub new {
    my ($class, $stack) = @_;
    return bless {s => $stack}, $class;
}

sub stack { $_[0]{s} }
sub redis { $_[0]{s}->redis }

# A valid creation body, overridden by %o (undef removes a field).
sub body {
    my (%o) = @_;
    my %b = (firstName => 'Ada', lastName => 'Lovelace',
             channelType => 'phone');
    while (my ($k, $v) = each %o) {
        if (defined $v) { $b{$k} = $v } else { delete $b{$k} }
    }
    return \%b;
}

# Options: plan (growth), status (active; undef: none), customer
# (cus_<W>; '' for none), card (1).
sub workspace {
    my ($self, $id, %o) = @_;

    my $s = $self->{s};
    my $customer = exists $o{customer} ? $o{customer} : "cus_$id";
    my %ws = (plan => $o{plan} // 'growth');
    $ws{subscriptionStatus} = exists $o{status} ? $o{status} : 'active';
    delete $ws{subscriptionStatus} unless defined $ws{subscriptionStatus};
    $ws{stripeCustomerId} = $customer if length $customer;

    my $tx = $s->op(PUT => "/workspaces/$id", \%ws);
    croak "workspace $id: " . $tx->res->code . ' ' . $tx->res->body
        unless $tx->res->is_success;

    $tx = $s->op(POST => "/workspaces/$id/keys");
    my $key = eval { $tx->res->json->{key} }
        or croak "key for $id: " . $tx->res->body;

    if (length $customer) {
        $tx = $s->stub(POST => '/_stub/customers',
                       {id => $customer, card => $o{card} // 1});
        croak 'stub customer: ' . $tx->res->body
            unless $tx->res->is_success;
    }

    return {
        id       => $id,
        key      => $key,
        auth     => {Authorization => "Bearer $key"},
        clerk    => {Authorization => 'Bearer '
                     . $s->clerk_token(o => {id => $id})},
        customer => $customer,
    };
}

# the workspace hash, changed by the operator API
sub set_workspace {
    my ($self, $w, %f) = @_;
    my $tx = $self->{s}->op(PUT => "/workspaces/$w->{id}", \%f);
    croak 'set_workspace: ' . $tx->res->body unless $tx->res->is_success;
}

sub _headers {
    my ($w) = @_;
    return ref $w eq 'HASH' && $w->{auth} ? {%{ $w->{auth} }}
         : ref $w eq 'HASH'               ? {%$w}
         : {};
}

# req($w, GET => $path, $body?, %headers): $w a workspace (its API key),
# a plain header hash, or undef. $body: a reference to a string (sent as
# is), another reference (JSON) or undef.
sub req {
    my ($self, $w, $method, $path, $body, %headers) = @_;
    my $s = $self->{s};
    my @content = !defined $body        ? ()
                : ref $body eq 'SCALAR' ? ($$body)
                : (json => $body);
    my $tx = $s->ua->build_tx($method => $s->url($path)
                              => {%{ _headers($w) }, %headers} => @content);
    return $s->ua->start($tx);
}

sub create {
    my ($self, $w, $body, %headers) = @_;
    return $self->req($w, POST => $CREATE, $body // body(), %headers);
}

sub get {
    my ($self, $w, $id) = @_;
    return $self->req($w, GET => "$CREATE/$id");
}

# manage($w, $id, 'cancel') or manage($w, $id, {...}) or (\'raw')
sub manage {
    my ($self, $w, $id, $action) = @_;
    my $body = ref $action ? $action : {action => $action};
    return $self->req($w, POST => "$CREATE/$id", $body);
}

sub list {
    my ($self, $w) = @_;
    return $self->req($w, GET => '/api/lines/by-user');
}

# check-availability with the workspace's Clerk token
sub check {
    my ($self, $w, $id) = @_;
    my $h = ref $w eq 'HASH' && $w->{clerk} ? $w->{clerk} : $w;
    return $self->req($h, GET => '/api/lines/check-availability'
                      . (defined $id ? "?id=$id" : ''));
}

# a created line request's id, or croak
sub created {
    my ($self, $w, %o) = @_;
    my $tx = $self->create($w, body(%o));
    my $b = eval { decode_json($tx->res->body) } // {};
    croak 'create: ' . $tx->res->code . ' ' . $tx->res->body
        unless $tx->res->code == 201;
    # the next creation in a later millisecond: the listing orders lines
    # by their creation's ms, and lines of the same ms by id (random),
    # which broke the 'oldest first' checks of t/188 on a fast box
    Time::HiRes::sleep(0.002);
    return wantarray ? ($b->{line}{_id}, $b) : $b->{line}{_id};
}

# An add-on request awaiting payment (growth: two included phone lines
# first, then the third is paid). Returns (id, 201 body).
sub awaiting {
    my ($self, $w, %o) = @_;
    return $self->created($w, channelType => 'email',
                          email => 'ada@example.com', %o);
}

# Run requests at once (non-blocking, a connection each); each one is
# [$w, METHOD => $path, $body, %headers]. Returns the transactions.
sub parallel {
    my ($self, @reqs) = @_;

    my $s = $self->{s};
    my $ua = Mojo::UserAgent->new(
        connect_timeout => 10, inactivity_timeout => 30,
        request_timeout => 30, max_connections => 0,
    );

    my @p = map {
        my ($w, $method, $path, $body, %headers) = @$_;
        my @content = !defined $body        ? ()
                    : ref $body eq 'SCALAR' ? ($$body)
                    : (json => $body);
        $ua->start_p($ua->build_tx($method => $s->url($path)
                     => {%{ _headers($w) }, %headers} => @content));
    } @reqs;

    my @txs;
    Mojo::Promise->all(@p)->then(sub { @txs = map { $_->[0] } @_ })
        ->catch(sub { croak "parallel: @_" })->wait;

    return @txs;
}

# Start a request without waiting, call $poll every 10 ms while it is in
# flight until $poll returns true (at most $timeout s), then wait for the
# answer. Returns the transaction and whether $poll said true in time.
sub during {
    my ($self, $req, $poll, $timeout) = @_;

    my $s = $self->{s};
    my ($w, $method, $path, $body, %headers) = @$req;
    my $ua = Mojo::UserAgent->new(inactivity_timeout => 30,
                                  request_timeout => 30);
    my @content = !defined $body ? () : (json => $body);
    my $tx;
    my $p = $ua->start_p($ua->build_tx($method => $s->url($path)
                         => {%{ _headers($w) }, %headers} => @content))
        ->then(sub { $tx = shift },
               # the connection closed unanswered (a worker killed on
               # purpose): no $tx, which the caller checks
               sub { undef $tx });

    my $done = 0;
    my $until = Time::HiRes::time() + ($timeout // 5);
    my $id = Mojo::IOLoop->recurring(0.01 => sub {
        return if $done;
        $done = 1 if $poll->() || Time::HiRes::time() > $until;
    });
    $p->wait;
    Mojo::IOLoop->remove($id);

    return ($tx, $done);
}

# the OpenAPI document (LG::OpenAPI), strict (no coercion of types)
sub openapi { return LG::OpenAPI::document() }

# the location /api/line-requests/ answers for any path below it, the rest
# of the URI being the id: the document's path for a request
sub _template {
    my ($tx) = @_;
    return $tx->req->url->path->to_string =~ m{^/api/line-requests/}
        ? '/api/line-requests/{id}' : undef;
}

# the errors of an answer against docs/openapi.yaml (empty: it matches)
sub invalid {
    my ($self, $tx) = @_;
    return LG::OpenAPI::invalid($tx, undef, _template($tx));
}

# answer_is (status, X-Request-Id, Content-Type, a JSON object), then the
# answer against docs/openapi.yaml. Returns the body.
sub answer {
    my ($self, $tx, $status, $name) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;

    my $body = answer_is($tx, $status, $name);
    answer_matches($tx, $name, undef, _template($tx));

    return $body // {};
}

# answer, then {"error": ...} with code (undef: no code)
sub error_is {
    my ($self, $tx, $status, $code, $name, $error_re) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;

    my $b = $self->answer($tx, $status, $name);
    is($b->{code}, $code, "$name: code " . ($code // 'absent'));
    like($b->{error} // '', $error_re // qr/./, "$name: error text");
    return $b;
}

# a VALIDATION_ERROR naming $field (undef: no field)
sub invalid_field {
    my ($self, $tx, $field, $name) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;

    my $b = $self->error_is($tx, 400, 'VALIDATION_ERROR', $name);
    is($b->{field}, $field, "$name: field " . ($field // 'absent'));
    return $b;
}

# the stub

sub stub_state {
    my ($self) = @_;
    return $self->{s}->stub(GET => '/_stub/state')->res->json;
}

# invoices of a customer (all: every one), as a list of hashes
sub invoices {
    my ($self, $customer) = @_;
    my $inv = $self->stub_state->{invoices} // {};
    return grep { !defined $customer || $_->{customer} eq $customer }
           values %$inv;
}

sub invoice {
    my ($self, $id) = @_;
    return $self->stub_state->{invoices}{$id};
}

# the stub's request log entries matching a path regex
sub stripe_log {
    my ($self, $re) = @_;
    return grep { $_->{path} =~ $re } @{ $self->stub_state->{log} // [] };
}

sub fault {
    my ($self, %f) = @_;
    my $tx = $self->{s}->stub(POST => '/_stub/faults', {
        method => 'POST', path_prefix => '/v1/invoices', count => 1, %f,
    });
    croak 'fault: ' . $tx->res->body unless $tx->res->is_success;
}

sub clear_faults {
    my ($self) = @_;
    $self->{s}->stub(DELETE => '/_stub/faults');
}

# An invoice of request $id made at the stub as the module makes one
# (metadata[line_request_id]; metadata[invoice_seq] $seq when defined, as
# a reissue claim's carries it), its item added, left a draft, or
# finalized (open), or paid. Returns its id. As a lapsed claim left it,
# or a person at Stripe with the request's id (t/140, t/235).
sub request_invoice {
    my ($self, $w, $id, $status, $seq, $back) = @_;
    my $s = $self->{s};
    my $h = {Authorization => 'Bearer sk_test_lapsed'};
    my $tx = $s->ua->post($s->stub_url('/v1/invoices') => $h =>
        form => {customer => $w->{customer},
                 collection_method => 'send_invoice', days_until_due => 7,
                 'metadata[workspace_id]' => $w->{id},
                 'metadata[line_request_id]' => $id,
                 defined $seq ? ('metadata[invoice_seq]' => $seq) : ()});
    my $in = $tx->res->json->{id} or croak 'invoice: ' . $tx->res->body;
    $s->ua->post($s->stub_url('/v1/invoiceitems') => $h =>
                 form => {customer => $w->{customer},
                          price => 'price_email_line', invoice => $in});
    $s->stub(POST => "/_stub/invoices/$in/backdate", {seconds => $back})
        if $back;
    return $in if $status eq 'draft';
    $s->ua->post($s->stub_url("/v1/invoices/$in/finalize") => $h);
    $self->invoice_do($in, 'pay') if $status eq 'paid';
    return $in;
}

# drive an invoice at the stub ("the customer pays"): pay, void,
# mark_uncollectible; with a webhook URL, the event is delivered too
sub invoice_do {
    my ($self, $id, $op, $webhook) = @_;
    my $tx = $self->{s}->stub(POST => "/_stub/invoices/$id/$op",
                              $webhook ? {webhook_url => $webhook} : {});
    return $tx->res->json;
}

# Redis

sub lr {
    my ($self, $w, $id) = @_;
    my $ws = ref $w ? $w->{id} : $w;
    return {$self->redis->hgetall("lg:{ws:$ws}:lr:$id")};
}

sub pending {
    my ($self, $w) = @_;
    my $ws = ref $w ? $w->{id} : $w;
    return $self->redis->get("lg:{ws:$ws}:pending");
}

sub request_ids {
    my ($self, $w) = @_;
    my $ws = ref $w ? $w->{id} : $w;
    return $self->redis->zrange("lg:{ws:$ws}:lines", 0, -1);
}

# A creation that failed left nothing in workspace $w: no pending
# marker, no request, no idempotency key held (the tests named
# "$name: ..." when given $name). Returns the requests' ids.
sub left_no_request {
    my ($self, $w, $name) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    my $n = defined $name ? "$name: " : '';

    ok(!defined $self->pending($w), "${n}no pending marker");
    my @ids = $self->request_ids($w);
    is(scalar @ids, 0, "${n}no request left") or diag "@ids";
    my @idem = $self->redis->keys("lg:{ws:$w->{id}}:idem:*");
    is(scalar @idem, 0, "${n}no idempotency key held");
    return @ids;
}

# a reissue_lapsed entry of workspace $w's request $id, a minute old,
# queued as lr_invoice_orphan queues it
sub lapsed_entry {
    my ($self, $w, $id) = @_;
    my @t = gmtime(time - 60);
    my $at = sprintf '%04d-%02d-%02dT%02d:%02d:%02d.000Z', $t[5] + 1900,
             $t[4] + 1, @t[3, 2, 1, 0];
    $self->redis->xadd('lg:{fleet}:reconcile', '*', workspace => $w->{id},
                       line_request_id => $id, invoice_id => '',
                       reason => 'reissue_lapsed',
                       customer => $w->{customer}, at => $at);
}

# the entries of the provisioning stream, as hashes
sub stream {
    my ($self) = @_;
    my @e = $self->redis->xrange('lg:provisioning', '-', '+');
    return map { +{ @{ $_->[1] } } } @e;
}

# keys of the workspace's line requests, pending marker, listing and
# idempotency records: what a refused or invalid request must not touch
sub state_read {
    my ($self, $w) = @_;
    my $ws = ref $w ? $w->{id} : $w;
    my $r = $self->redis;
    my %d;
    for my $k ($r->keys("lg:{ws:$ws}:*"), $r->keys('lg:line:*'),
               $r->keys('lg:invoice:*'), $r->keys('lg:provisioning'))
    {
        next if $k =~ /\}:gcra$/;    # the workspace's rate, not state
        my $t = $r->type($k);
        $d{$k} = $t eq 'hash'   ? {$r->hgetall($k)}
               : $t eq 'string' ? $r->get($k)
               : $t eq 'zset'   ? [$r->zrange($k, 0, -1)]
               : $t eq 'stream' ? $r->xlen($k)
               : $t;
    }
    return \%d;
}

# state_read once it holds still: a request's answer may go out before
# the writes the server sends without waiting (a refused creation's
# durable DEL of the owner index it wrote first, a cluster's set-up
# relay): read until two reads in a row agree (3 s at most)
sub state_keys {
    my ($self, $w) = @_;
    my $d = $self->state_read($w);
    eventually(sub {
        my $again = $self->state_read($w);
        my $same = same_data($again, $d);
        $d = $again;
        $same;
    }, 3);
    return $d;
}

# "nothing written": the state as $before once the writes sent after the
# answer have landed (3 s at most), compared with is_deeply's report
sub state_unchanged {
    my ($self, $w, $before, $name) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    return is_deeply(reads_as(sub { $self->state_read($w) }, $before, 3),
                     $before, $name);
}

# Holding a step that follows another, on the Redis side: a store whose
# reply is lost (linegate_redis_command_timeout) while the invoice index
# written just before it was answered. Nothing can be timed between the
# two from outside (nginx writes the store as soon as the index's answer
# arrives), so Redis orders it: every master's writes are paused
# (pause_writes: CLIENT PAUSE WRITE; reads go on, a script is a write);
# once the index's SET waits on its master, a second connection queues
# behind it a write and a new pause, and the first pause is lifted
# (hold_after_index): Redis runs the SET, then that connection's write
# and pause, before it answers the SET. The store, written after the
# answer, waits (so does anything else written meanwhile) until
# release_writes. A second connection is what orders them: the paused
# clients run again in the order they were paused.

# the ports of the masters: one Redis's, Sentinel's, a cluster's
sub masters {
    my ($self) = @_;
    my $s = $self->{s};
    return $s->cluster_masters if $s->topology eq 'cluster';
    return $s->topology eq 'sentinel' ? $s->sentinel_master_port
                                      : $s->redis_port;
}

sub _master_of {
    my ($self, $key) = @_;
    my $s = $self->{s};
    return $s->topology eq 'cluster' ? $s->cluster_master_of($key)
                                     : ($self->masters)[0];
}

sub _resp {
    return join '', '*' . scalar(@_) . "\r\n",
                    map { '$' . length($_) . "\r\n$_\r\n" } @_;
}

# a command on its own connection to $port, its first reply line
sub _on {
    my ($port, @cmd) = @_;
    my $c = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port,
                                  Timeout => 2)
        or croak "redis $port: $!";
    print $c _resp(@cmd);
    my $line = <$c> // '';
    close $c;
    return $line;
}

# the CLIENT LIST lines of $port's clients blocked (a pause) on a SET
sub _held_sets {
    my ($port) = @_;
    my $c = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port,
                                  Timeout => 2)
        or croak "redis $port: $!";
    print $c _resp('CLIENT', 'LIST');
    my $head = <$c> // '';
    my ($len) = $head =~ /^\$(\d+)/ or return ();
    my $list = '';
    read($c, $list, $len + 2 - length $list, length $list)
        while length($list) < $len + 2 && !eof $c;
    close $c;
    return grep { /\bflags=\w*b\w* / && /\bcmd=set\b/ } split /\n/, $list;
}

# every master's writes paused (reads answered), for $ms at most
sub pause_writes {
    my ($self, $ms) = @_;
    for my $port ($self->masters) {
        my $ok = _on($port, 'CLIENT', 'PAUSE', $ms // 10000, 'WRITE');
        croak "CLIENT PAUSE on $port: $ok" unless $ok =~ /^\+OK/;
    }
}

# Once lg:invoice:<$invoice>'s SET waits at its master (pause_writes
# first), let it alone run there: what is written after its answer waits
# until release_writes. 1 once done, 0 when no SET waited within
# $timeout s.
sub hold_after_index {
    my ($self, $invoice, $timeout) = @_;
    my $key = "lg:invoice:$invoice";
    my $port = $self->_master_of($key) or croak "no master of $key";
    my $until = Time::HiRes::time() + ($timeout // 10);
    Time::HiRes::sleep(0.005) until _held_sets($port)
                                 || Time::HiRes::time() > $until;
    return 0 unless _held_sets($port);

    my $c = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port,
                                  Timeout => 2)
        or croak "redis $port: $!";
    print $c _resp('CLIENT', 'SETNAME', 'lg-hold');
    <$c>;
    # (its key in the index's slot: the write waits there, not MOVED)
    print $c _resp('SET', "lg-hold{$key}", 1)
             . _resp('CLIENT', 'PAUSE', 10000, 'WRITE');
    Time::HiRes::sleep(0.005) until (grep { /\bname=lg-hold\b/ }
                                     _held_sets($port))
                                 || Time::HiRes::time() > $until;
    my $ok = _on($port, 'CLIENT', 'UNPAUSE');
    push @{ $self->{held} }, [$c, $port, "lg-hold{$key}"];
    return $ok =~ /^\+OK/ ? 1 : 0;
}

# every master's writes go on
sub release_writes {
    my ($self) = @_;
    _on($_, 'CLIENT', 'UNPAUSE') for $self->masters;
    for my $h (@{ delete $self->{held} // [] }) {
        my ($c, $port, $key) = @$h;
        close $c;
        _on($port, 'DEL', $key);
    }
}

# A payment_link that reissues request $id of $w (its invoice $old void
# at the stub) with its lr_reissue_store held past the command timeout,
# so that the step is sent again (LINK_STORE_AGAIN: a durable write, then
# the request's own copy): the item step slowed, the new invoice found,
# then the store held behind its index (pause_writes, hold_after_index).
# Options: fence, the new invoice marked first as lr_void_fence marks it
# (voidingInvoice); answered, the writes let go once the store timed out,
# so that Redis answers the copy (else once the request answered: the
# copy timed out too). Returns {tx, made, claimed (its claim's
# reissueAt), held (the store held, and with answered its timeout seen),
# log (the error log from the start to the answer)}.
sub link_store_sent_again {
    my ($self, $w, $id, $old, %o) = @_;
    my $s = $self->{s};
    my $r = $s->redis;
    my $logoff = length $s->error_log;
    my %got = (made => '', claimed => 0, held => 0);

    $self->fault(path_prefix => '/v1/invoiceitems', latency_ms => 1000);
    ($got{tx}) = $self->during([$w, POST => "/api/line-requests/$id",
                                {action => 'payment_link'}], sub {
        my $now = $self->lr($w, $id);
        return 0 unless ($now->{invoiceSeq} // 0) == 1;
        $got{claimed} = $now->{reissueAt};
        my ($new) = grep { $_->{id} ne $old }
                    $self->invoices($w->{customer});
        return 0 unless $new;
        $got{made} = $new->{id};
        $r->hset("lg:{ws:$w->{id}}:lr:$id", voidingInvoice => $new->{id})
            if $o{fence};
        $self->pause_writes;
        $got{held} = $self->hold_after_index($new->{id});
        if ($o{answered} && $got{held}) {
            # timed out, sent again (held too): let Redis run them
            # before the request's copy times out in turn
            $got{held} = eventually(sub {
                substr($s->error_log, $logoff) =~ /redis command timed out/
            }, 5);
            $self->release_writes;
        }
        return 1;
    }, 5);
    $got{log} = substr $s->error_log, $logoff;
    $self->release_writes;
    $self->clear_faults;
    return \%got;
}

# mark a provisioning line active or failed through the operator API
sub activate {
    my ($self, $id, %o) = @_;
    my $tx = $self->{s}->op(POST => "/lines/$id/active",
                            {phone => $o{phone} // '+14155550100'});
    croak 'activate: ' . $tx->res->body unless $tx->res->is_success;
}

1;
