#!/usr/bin/env perl
# stripe-stub.pl - a stateful, in-memory fake of the parts of the Stripe API
# that linegate uses (customers, invoice items, invoices, subscriptions),
# plus a JSON control API for tests (seed data, inject faults, pay invoices
# "on the hosted page", deliver signed webhooks).
#
# Usage:
#   perl t/stub/stripe-stub.pl --listen 127.0.0.1:PORT \
#       [--webhook-secret whsec_xxx] [--pidfile F] [--log F]
#
#   Runs in the foreground, single process; state lives in memory.
#   The pidfile is written only once the socket listens, so a caller can
#   poll for it (or for GET /_stub/health) as the readiness signal.
#   PORT 0 picks a free port (see the log for the one chosen).
#   SIGTERM/SIGINT stop it and remove the pidfile.
#
# Stripe API (Authorization: Bearer sk_test_..., form-encoded bodies):
#   POST /v1/customers            GET|POST /v1/customers/:id
#   POST /v1/invoiceitems         GET /v1/invoiceitems/:id
#   POST /v1/invoices             GET /v1/invoices/:id (expand[]=payments)
#   POST /v1/invoices/:id/{finalize,void,pay,mark_uncollectible}
#   POST /v1/subscriptions        GET|DELETE /v1/subscriptions/:id
#                                 (payment_behavior=default_incomplete:
#                                 incomplete, its first invoice open)
#                                 (invoice_now=true: a final invoice,
#                                 paid, of 0 with prorate: a credit)
#   GET  /v1/subscriptions        list: customer, status (default: not
#   GET  /v1/invoices             canceled; "all"), limit (1..100, 10),
#   GET  /v1/refunds              created[gte|gt|lte|lt], starting_after;
#                                 invoices also subscription and
#                                 expand[]=data.payments, refunds
#                                 payment_intent or charge
#   POST /v1/refunds              GET /v1/refunds/:id
#                                 payment_intent (or charge), amount
#                                 (default: what is left); a second
#                                 refund of a whole one: 400
#                                 charge_already_refunded
#   GET  /i/:id                   hosted invoice page (plain HTML)
#
# An invoice paid by card (not out of band, more than 0) carries a
# payment_intent ("pi_...") and a charge ("ch_..."); a refund of it adds
# to its amount_refunded and sets refunded once the whole was given back.
# A refund is made succeeded, or with the status POST /_stub/refund_status
# set (pending, requires_action: it counts as refunded, as at Stripe,
# until it fails or is canceled; failed, canceled); POST
# /_stub/refunds/:id/{succeed,fail,cancel} moves one on.
# POST /_stub/subscriptions/:id/renew bills the next period: an invoice
# (billing_reason subscription_cycle) paid by the card, its latest_invoice.
#
# Control API (JSON, no auth):
#   GET  /_stub/health                    {"ok":true}
#   POST /_stub/reset                     forget everything
#   POST /_stub/customers                 {"id","card","decline",...}
#   POST /_stub/prices                    {"id","unit_amount"}
#   GET  /_stub/state                     all objects + request log
#   POST|GET|DELETE /_stub/faults         queue / list / clear faults
#   POST /_stub/invoices/:id/{pay,void,mark_uncollectible}
#                                         {"webhook_url"?} -> invoice.* event
#   POST /_stub/invoices/:id/backdate     {"seconds"}: created earlier
#   POST /_stub/subscriptions/:id/renew   the next period's invoice, paid
#   POST /_stub/refund_status             {"status"}: of the refunds made
#   POST /_stub/refunds/:id/{succeed,fail,cancel}
#   POST /_stub/webhook                   {"url","type","object",...}
#
# Faults: {"path_prefix":"/v1/invoices","method":"POST","status":500,
#   "count":1,"latency_ms":0,"drop":false,"after_commit":false,
#   "retry_after":1,"body":{...}?}. The first queued fault matching a
#   /v1 request is used; count < 0 never runs out. latency_ms delays
#   the request (the loop stays free); status answers a Stripe-shaped
#   error (429 adds Retry-After); drop closes the connection unanswered.
#   after_commit: the real work (state, idempotency record) happens
#   first, then the latency and the faulty answer.
#   "oversize":N  the real work happens (as after_commit), and the answer
#   (the real one, or the fault's status) is padded with trailing spaces
#   to at least N bytes: still valid JSON, larger than a small
#   subrequest_output_buffer_size.
#   "cut":true  the real work happens (as after_commit), the answer's
#   headers promise the whole body in Content-Length, then the
#   connection closes after half of it. Both combine with status,
#   latency_ms, path_prefix, method and count like the other faults.
#   "saved":true  a 5xx fault's answer, the work not done, is stored
#   under the request's Idempotency-Key as real Stripe stores a 500: a
#   later call with that key replays the 500 (Idempotent-Replayed).
#   "drip_ms":N  the real work happens (as after_commit), then the answer
#   (the real one, or the fault's status) drips: "drip_bytes" (default 1)
#   of it every N ms, from its status line on, or, with "drip_body":true,
#   its headers at once and only its body dripping; the connection closes
#   after the last byte. Each read of a proxy in front comes within its
#   timeout while the whole answer takes as long as its length says.
#   "drip_close":true leaves Content-Length out (the body ends where the
#   connection closes: HTTP/1.0's way, a proxy's between) and sends
#   "X-Accel-Buffering: no" (nginx reads it as with proxy_buffering off).
# Webhooks: Stripe-Signature "t=<unix>,v1=<hmac-sha256 hex of 't.body'>"
#   with --webhook-secret (default whsec_test_secret). Optional fields:
#   "id", "api_version", "secret", "timestamp", "signature" (raw header),
#   "raw_body" (exact bytes), "object_id" (send a stored object). The
#   control call answers after delivery: {"delivered":true,"status":N,
#   "body":"<receiver body>","json":<body parsed or null>,"event_id",
#   "signature"} or {"delivered":false,"error":...}.
# Idempotency-Key (POST, scoped per API key): same method, path and body
#   replays the first answer byte for byte with Idempotent-Replayed: true;
#   different ones get 400 idempotency_error; a key still being handled
#   (latency fault) gets 409. Auth and parameter errors are not stored.
#
# Example:
#   perl t/stub/stripe-stub.pl --listen 127.0.0.1:12111 &
#   curl -s -XPOST localhost:12111/_stub/customers -d '{"id":"cus_a",
#     "card":true}'
#   curl -s -XPOST localhost:12111/_stub/faults -d '{"path_prefix":
#     "/v1/invoices","method":"POST","status":500,"count":1}'
use strict;
use warnings;

use Mojolicious::Lite;
use Mojo::IOLoop;
use Mojo::JSON qw(decode_json true false);
use Mojo::Log;
use Mojo::Parameters;
use Mojo::Server::Daemon;
use Mojo::UserAgent;
use Mojo::Util qw(decode encode xml_escape);
use Digest::SHA qw(hmac_sha256_hex);
use Getopt::Long qw(GetOptions);
use JSON::PP ();

# ---------------------------------------------------------------------------
# Options

my %opt = (
  listen           => '127.0.0.1:12111',
  'webhook-secret' => 'whsec_test_secret',
);
GetOptions(\%opt, 'listen=s', 'webhook-secret=s', 'pidfile=s', 'log=s',
  'help|h')
  or die "usage: $0 --listen HOST:PORT [--webhook-secret S]"
  . " [--pidfile F] [--log F]\n";
if ($opt{help}) {
  print "usage: $0 --listen HOST:PORT [--webhook-secret S]"
    . " [--pidfile F] [--log F]\n";
  exit 0;
}

# Echoed as Stripe-Version when a request names none; events' api_version.
my $DEFAULT_API_VERSION = '2025-03-31.basil';
my $DEFAULT_UNIT_AMOUNT = 1500;    # cents, for prices nobody registered
my $MONTH               = 30 * 86400;

# Bytes that Stripe itself would send: pretty-printed with two-space
# indentation and "/" unescaped (Mojo::JSON writes "\/"). Sorted keys keep
# replays and signatures reproducible.
my $STRIPE_JSON = JSON::PP->new->utf8->canonical->indent->indent_length(2)
  ->space_after;

sub stripe_json { return $STRIPE_JSON->encode($_[0]) }

# ---------------------------------------------------------------------------
# State. Everything lives in %S so that /_stub/reset is one assignment.

my %S;
my $GENERATION = 0;    # bumped by reset; delayed requests of an older
                       # generation are dropped instead of touching new state

sub reset_state {
  %S = (
    customers     => {},
    invoices      => {},
    invoiceitems  => {},
    subscriptions => {},
    refunds       => {},
    refund_status => 'succeeded',    # of the refunds made from now on
    paid_by       => {},    # payment intent or charge => invoice id
    prices        => {},    # registered through the control API
    declining     => {},    # customer id => 1 when its card declines
    pending       => {},    # customer id => [ii ids not on an invoice yet]
    idem          => {},    # api key => idempotency key => saved response
    inflight      => {},    # "api key\0idem key" => 1 while being handled
    log           => [],
    faults        => [],
    seq           => {},
  );
  $GENERATION++;
}
reset_state();

my @ID_CHARS = ('A' .. 'Z', 'a' .. 'z', 0 .. 9);

# Stripe-looking ids: prefix, underscore, 24 base62 characters.
sub new_id {
  my ($prefix) = @_;
  return $prefix . '_' . join '', map { $ID_CHARS[rand @ID_CHARS] } 1 .. 24;
}

sub next_seq { return ++$S{seq}{ $_[0] } }

# The listen address as given, but with the real port once bound.
my $PUBLIC = $opt{listen};

# ---------------------------------------------------------------------------
# Form parsing: Stripe's bracket notation into nested hashes and arrays.
# "items[0][price]=p" => {items => [{price => 'p'}]},
# "expand[]=a&expand[]=b" => {expand => ['a','b']}.

sub is_index { return $_[0] eq '' || ($_[0] =~ /^\d{1,3}$/) }

# Return the child container of $node under $key, creating it as $want.
sub child {
  my ($node, $key, $want) = @_;
  if (ref $node eq 'ARRAY') {
    if ($key eq '') { push @$node, $want; return $want }
    my $cur = $node->[$key];
    return $cur if ref $cur && ref $cur eq ref $want;
    return $node->[$key] = $want;
  }
  my $cur = $node->{$key};
  return $cur if ref $cur && ref $cur eq ref $want;
  return $node->{$key} = $want;
}

sub assign {
  my ($root, $keys, $value) = @_;
  my @k    = @$keys;
  my $node = $root;
  while (@k > 1) {
    my $key = shift @k;
    $node = child($node, $key, is_index($k[0]) ? [] : {});
  }
  my $last = $k[0];
  if (ref $node eq 'ARRAY') {
    if ($last eq '') { push @$node, $value }
    else             { $node->[$last] = $value }
  }
  else { $node->{$last} = $value }
}

sub nest_params {
  my ($pairs) = @_;
  my $root = {};
  for (my $i = 0; $i < @$pairs; $i += 2) {
    my ($name, $value) = @$pairs[$i, $i + 1];
    my ($base, $rest) = $name =~ /^([^\[\]]+)((?:\[[^\[\]]*\])*)$/;
    if (!defined $base) { $root->{$name} = $value; next }
    assign($root, [$base, $rest =~ /\[([^\[\]]*)\]/g], $value);
  }
  return $root;
}

# ---------------------------------------------------------------------------
# Stripe-shaped errors. A handler returns [status, body, nosave]; nosave
# marks answers Stripe does not store under an idempotency key
# (authentication and parameter validation failures).

sub stripe_error {
  my ($status, $type, $code, $message, %extra) = @_;
  my %e = (type => $type, message => $message, %extra);
  $e{code} = $code if defined $code;
  return [$status, {error => \%e}, delete $e{nosave}];
}

sub missing_param {
  my ($param) = @_;
  return stripe_error(400, 'invalid_request_error', 'parameter_missing',
    "Missing required param: $param.", param => $param, nosave => 1);
}

sub invalid_param {
  my ($param, $message) = @_;
  return stripe_error(400, 'invalid_request_error', 'parameter_invalid',
    $message, param => $param, nosave => 1);
}

sub no_such {
  my ($what, $id, $param) = @_;
  return stripe_error(404, 'invalid_request_error', 'resource_missing',
    "No such $what: '$id'", param => $param);
}

sub not_open {
  my ($message) = @_;
  return stripe_error(400, 'invalid_request_error', 'invoice_not_open',
    $message);
}

sub card_declined {
  return stripe_error(402, 'card_error', 'card_declined',
    'Your card was declined.', decline_code => 'generic_decline');
}

my $NO_SOURCE =
  'This customer has no attached payment source or default payment method.';

sub no_payment_source {
  my ($status, $type) = @_;
  return stripe_error($status, $type, 'resource_missing', $NO_SOURCE);
}

# ---------------------------------------------------------------------------
# Small helpers for form values.

sub form_bool {
  my ($v, $default) = @_;
  return $default if !defined $v || $v eq '';
  return $v eq 'true' || $v eq '1' ? true : false;
}

sub metadata_of {
  my ($p) = @_;
  my $m = $p->{metadata};
  return {} unless defined $m;
  return ref $m eq 'HASH' ? {%$m} : undef;
}

sub positive_int {
  my ($v, $default) = @_;
  return $default if !defined $v || $v eq '';
  return $v =~ /^\d+$/ && $v > 0 ? 0 + $v : undef;
}

# ---------------------------------------------------------------------------
# Customers

sub customer_obj {
  my (%a) = @_;
  return {
    id               => $a{id},
    object           => 'customer',
    balance          => 0,
    created          => time,
    currency         => undef,
    default_source   => $a{source},
    delinquent       => false,
    description      => $a{description},
    email            => $a{email},
    invoice_prefix   => 'STUB',
    invoice_settings => {
      custom_fields          => undef,
      default_payment_method => $a{payment_method},
      footer                 => undef,
      rendering_options      => undef,
    },
    livemode => false,
    metadata => $a{metadata} // {},
    name     => $a{name},
  };
}

sub has_card {
  my ($cus) = @_;
  return $cus->{invoice_settings}{default_payment_method}
    || $cus->{default_source};
}

# Stripe's test tokens that decline also make the stub's customer decline.
sub declining_token { return ($_[0] // '') =~ /chargeDeclined|Declined/ }

sub card_from_params {
  my ($p) = @_;
  my $pm  = ref $p->{invoice_settings} eq 'HASH'
    ? $p->{invoice_settings}{default_payment_method} : undef;
  my $src = $p->{source};
  return ($pm, $src);
}

sub customer_create {
  my ($req) = @_;
  my $p    = $req->{params};
  my $meta = metadata_of($p) // return invalid_param('metadata',
    'Invalid object');
  my ($pm, $src) = card_from_params($p);
  my $cus = customer_obj(
    id             => new_id('cus'),
    email          => $p->{email},
    name           => $p->{name},
    description    => $p->{description},
    metadata       => $meta,
    payment_method => (length($pm // '') ? $pm : undef),
    source         => (length($src // '') ? new_id('card') : undef),
  );
  $S{declining}{ $cus->{id} } = 1
    if declining_token($pm) || declining_token($src);
  $S{customers}{ $cus->{id} } = $cus;
  return [200, $cus];
}

sub customer_get {
  my ($req, $id) = @_;
  my $cus = $S{customers}{$id} // return no_such('customer', $id, 'id');
  return [200, $cus];
}

sub customer_update {
  my ($req, $id) = @_;
  my $cus  = $S{customers}{$id} // return no_such('customer', $id, 'id');
  my $p    = $req->{params};
  my $meta = metadata_of($p) // return invalid_param('metadata',
    'Invalid object');
  $cus->{metadata} = {%{ $cus->{metadata} }, %$meta};
  for my $f (qw(email name description)) {
    $cus->{$f} = $p->{$f} if exists $p->{$f};
  }
  my ($pm, $src) = card_from_params($p);
  if (defined $pm) {    # an empty string unsets, as in Stripe
    $cus->{invoice_settings}{default_payment_method} =
      length $pm ? $pm : undef;
  }
  $cus->{default_source} = length $src ? new_id('card') : undef
    if defined $src;
  $S{declining}{$id} = 1 if declining_token($pm) || declining_token($src);
  return [200, $cus];
}

# ---------------------------------------------------------------------------
# Prices: registered ones are kept whole; any other price_... id is made up
# on the fly with the default amount.

sub price_obj {
  my ($pid, $recurring) = @_;
  return $S{prices}{$pid} // made_up_price($pid, $recurring);
}

sub made_up_price {
  my ($pid, $recurring) = @_;
  return {
    id                  => $pid,
    object              => 'price',
    active              => true,
    created             => time,
    currency            => 'usd',
    livemode            => false,
    lookup_key          => undef,
    metadata            => {},
    product             => 'prod_stub',
    recurring           => $recurring ? monthly() : undef,
    type                => $recurring ? 'recurring' : 'one_time',
    unit_amount         => $DEFAULT_UNIT_AMOUNT,
    unit_amount_decimal => decimal($DEFAULT_UNIT_AMOUNT),
  };
}

# Stripe sends amounts as integers and their "_decimal" twins as strings.
# sprintf keeps the integer itself un-stringified, so JSON::PP still
# writes it as a number.
sub decimal { return sprintf '%d', $_[0] }

sub monthly {
  return {interval => 'month', interval_count => 1,
    usage_type => 'licensed'};
}

# The current (2025+) shape of "which price is this line for".
sub pricing_of {
  my ($price) = @_;
  return {
    type          => 'price_details',
    price_details => {price => $price->{id}, product => $price->{product}},
    unit_amount_decimal => decimal($price->{unit_amount}),
  };
}

sub known_price { return $S{prices}{ $_[0] } || $_[0] =~ /^price_\w+$/ }

# ---------------------------------------------------------------------------
# Invoice items and invoice lines

sub invoice_item_create {
  my ($req) = @_;
  my $p = $req->{params};
  my $cid = $p->{customer} // return missing_param('customer');
  my $cus = $S{customers}{$cid}
    // return no_such('customer', $cid, 'customer');
  my $pricing = ref $p->{pricing} eq 'HASH' ? $p->{pricing} : {};
  my $pid = $p->{price} // $pricing->{price}
    // return missing_param('pricing[price]');
  return no_such('price', $pid, 'price') unless known_price($pid);
  my $qty = positive_int($p->{quantity}, 1)
    // return invalid_param('quantity', 'Invalid positive integer');
  my $meta = metadata_of($p) // return invalid_param('metadata',
    'Invalid object');
  my $inv;
  if (defined(my $iid = $p->{invoice})) {
    $inv = $S{invoices}{$iid} // return no_such('invoice', $iid, 'invoice');
    return stripe_error(400, 'invalid_request_error', 'invoice_not_editable',
      "The invoice $iid is $inv->{status} and can no longer be edited;"
      . ' invoice items can only be added to draft invoices.',
      param => 'invoice') unless $inv->{status} eq 'draft';
    return invalid_param('invoice',
      "The invoice $iid belongs to another customer.")
      unless $inv->{customer} eq $cid;
  }
  my $ii = new_invoice_item($cid, price_obj($pid), $qty, $meta,
    $p->{description});
  $S{invoiceitems}{ $ii->{id} } = $ii;
  if ($inv) { attach_item($inv, $ii) }
  else      { push @{ $S{pending}{$cid} }, $ii->{id} }
  return [200, $ii];
}

sub new_invoice_item {
  my ($cid, $price, $qty, $meta, $description) = @_;
  my $now = time;
  return {
    id                  => new_id('ii'),
    object              => 'invoiceitem',
    amount              => $price->{unit_amount} * $qty,
    currency            => 'usd',
    customer            => $cid,
    date                => $now,
    description         => $description,
    discountable        => true,
    invoice             => undef,
    livemode            => false,
    metadata            => $meta,
    parent              => undef,
    period              => {start => $now, end => $now},
    price               => $price,                # pre-2025 shape
    pricing             => pricing_of($price),    # current shape
    proration           => false,
    quantity            => $qty,
    subscription        => undef,
    unit_amount         => $price->{unit_amount},
    unit_amount_decimal => decimal($price->{unit_amount}),
  };
}

sub invoice_item_get {
  my ($req, $id) = @_;
  my $ii = $S{invoiceitems}{$id} // return no_such('invoiceitem', $id, 'id');
  return [200, $ii];
}

# A line carries both the old (price, invoice_item, subscription) and the
# new (pricing, parent) fields so the module may read either shape.
sub new_line {
  my (%a) = @_;
  my $price = $a{price};
  return {
    id           => new_id('il'),
    object       => 'line_item',
    amount       => $price->{unit_amount} * $a{quantity},
    currency     => 'usd',
    description  => $a{description} // "$a{quantity} x $price->{id}",
    discountable => true,
    invoice      => $a{invoice},
    invoice_item => $a{invoice_item},
    livemode     => false,
    metadata     => $a{metadata} // {},
    parent       => $a{parent},
    period       => {start => time, end => $a{period_end} // time},
    price        => $price,
    pricing      => pricing_of($price),
    proration    => false,
    quantity     => $a{quantity},
    subscription => $a{subscription},
    type         => $a{subscription} ? 'subscription' : 'invoiceitem',
  };
}

sub attach_item {
  my ($inv, $ii) = @_;
  $ii->{invoice} = $inv->{id};
  push @{ $inv->{lines}{data} }, new_line(
    invoice      => $inv->{id},
    invoice_item => $ii->{id},
    price        => $ii->{price},
    quantity     => $ii->{quantity},
    metadata     => $ii->{metadata},
    description  => $ii->{description},
    parent       => {
      type                 => 'invoice_item_details',
      invoice_item_details => {
        invoice_item      => $ii->{id},
        proration         => false,
        proration_details => {credited_items => undef},
        subscription      => undef,
      },
      subscription_item_details => undef,
    },
  );
  recompute($inv);
}

sub recompute {
  my ($inv) = @_;
  my $sum = 0;
  $sum += $_->{amount} for @{ $inv->{lines}{data} };
  $inv->{lines}{total_count} = scalar @{ $inv->{lines}{data} };
  $inv->{$_} = $sum for qw(subtotal total amount_due amount_remaining);
}

# ---------------------------------------------------------------------------
# Invoices

sub new_invoice {
  my (%a) = @_;
  my $now = time;
  my $id  = new_id('in');
  my $due = $a{collection_method} eq 'send_invoice'
    ? $now + 86400 * ($a{days_until_due} // 30) : undef;
  my $cus = $S{customers}{ $a{customer} };
  return {
    id               => $id,
    object           => 'invoice',
    account_country  => 'US',
    amount_due       => 0,
    amount_paid      => 0,
    amount_refunded  => 0,      # the stub's own: what refunds gave back
    amount_remaining => 0,
    attempt_count    => 0,
    attempted        => false,
    auto_advance     => $a{auto_advance} // false,
    billing_reason   => $a{billing_reason} // 'manual',
    collection_method => $a{collection_method},
    created          => $now,
    currency         => 'usd',
    customer         => $a{customer},
    customer_email   => $cus ? $cus->{email} : undef,
    days_until_due   => $a{days_until_due},
    description      => $a{description},
    due_date         => $due,
    hosted_invoice_url => undef,
    invoice_pdf      => undef,
    lines            => {
      object      => 'list',
      data        => [],
      has_more    => false,
      total_count => 0,
      url         => "/v1/invoices/$id/lines",
    },
    livemode           => false,
    metadata           => $a{metadata} // {},
    number             => undef,
    paid               => false,    # pre-2025 field
    paid_out_of_band   => false,
    parent             => undef,    # current shape of "from a subscription"
    payment_intent     => undef,    # pre-2025 shape, set when paid by card
    charge             => undef,
    refunded           => false,    # the stub's own: refunded whole
    period_end         => $now,
    period_start       => $now,
    status             => 'draft',
    status_transitions => {
      finalized_at            => undef,
      marked_uncollectible_at => undef,
      paid_at                 => undef,
      voided_at               => undef,
    },
    subscription     => undef,      # pre-2025 shape
    subtotal         => 0,
    total            => 0,
    webhooks_delivered_at => undef,
  };
}

my %COLLECTION = map { $_ => 1 } qw(charge_automatically send_invoice);
my %PENDING    = map { $_ => 1 } qw(include exclude include_and_require);

sub invoice_create {
  my ($req) = @_;
  my $p   = $req->{params};
  my $cid = $p->{customer} // return missing_param('customer');
  my $cm  = $p->{collection_method} // 'charge_automatically';
  return invalid_param('collection_method',
    "Invalid collection_method: must be one of charge_automatically or"
    . " send_invoice") unless $COLLECTION{$cm};
  my $pending = $p->{pending_invoice_items_behavior} // 'include';
  return invalid_param('pending_invoice_items_behavior',
    'Invalid pending_invoice_items_behavior: must be one of include,'
    . ' exclude') unless $PENDING{$pending};
  my $days;
  if (defined $p->{days_until_due} && $p->{days_until_due} ne '') {
    return invalid_param('days_until_due', 'Invalid integer')
      unless $p->{days_until_due} =~ /^\d+$/;
    $days = 0 + $p->{days_until_due};
  }
  my $meta = metadata_of($p) // return invalid_param('metadata',
    'Invalid object');
  $S{customers}{$cid} // return no_such('customer', $cid, 'customer');
  my $items = $pending eq 'exclude' ? [] : $S{pending}{$cid} // [];
  return stripe_error(400, 'invalid_request_error',
    'invoice_no_customer_line_items',
    "Nothing to invoice for customer $cid")
    if $pending eq 'include_and_require' && !@$items;
  my $inv = new_invoice(
    customer          => $cid,
    collection_method => $cm,
    days_until_due    => $cm eq 'send_invoice' ? ($days // 30) : $days,
    auto_advance      => form_bool($p->{auto_advance}, false),
    metadata          => $meta,
    description       => $p->{description},
  );
  $S{invoices}{ $inv->{id} } = $inv;
  attach_item($inv, $S{invoiceitems}{$_}) for @$items;
  delete $S{pending}{$cid} unless $pending eq 'exclude';
  return [200, $inv];
}

sub invoice_get {
  my ($req, $id) = @_;
  my $inv = $S{invoices}{$id} // return no_such('invoice', $id, 'id');
  my $expand = $req->{params}{expand};
  return [200, $inv]
    unless grep { defined && $_ eq 'payments' }
      ref $expand eq 'ARRAY' ? @$expand : ();
  return [200, {%$inv, payments => invoice_payments($inv)}];
}

# "payments" expanded, as Stripe (2025-03-31 on) names an invoice's
# payment intent: one paid payment when it was paid by card.
sub invoice_payments {
  my ($inv) = @_;
  my @data = !defined $inv->{payment_intent} ? () : {
    id             => 'inpay_' . substr($inv->{payment_intent}, 3),
    object         => 'invoice_payment',
    amount_paid    => $inv->{amount_paid},
    amount_requested => $inv->{amount_paid},
    currency       => $inv->{currency},
    invoice        => $inv->{id},
    is_default     => true,
    livemode       => false,
    payment        => {type => 'payment_intent',
      payment_intent => $inv->{payment_intent}},
    status         => 'paid',
  };
  return {object => 'list', data => \@data, has_more => false,
    url => "/v1/invoice_payments?invoice=$inv->{id}"};
}

sub finalize {
  my ($inv) = @_;
  $inv->{status}                           = 'open';
  $inv->{number}                           = sprintf 'STUB-%04d',
    next_seq('number');
  # https, as Stripe's links are (linegate takes no other); the page
  # itself is served over http at the same path (GET /i/:id)
  $inv->{hosted_invoice_url}               = "https://$PUBLIC/i/$inv->{id}";
  $inv->{invoice_pdf}                      = "https://$PUBLIC/i/$inv->{id}/pdf";
  $inv->{status_transitions}{finalized_at} = time;
  # Stripe marks a zero-total invoice paid as soon as it is finalized.
  mark_paid($inv) if $inv->{amount_due} == 0;
}

sub mark_paid {
  my ($inv, $out_of_band) = @_;
  $inv->{status}                      = 'paid';
  $inv->{paid}                        = true;
  $inv->{paid_out_of_band}            = $out_of_band ? true : false;
  $inv->{amount_paid}                 = $inv->{amount_due};
  $inv->{amount_remaining}            = 0;
  $inv->{status_transitions}{paid_at} = time;
  $inv->{attempted}                   = true unless $out_of_band;
  return if $out_of_band || $inv->{amount_paid} <= 0
    || defined $inv->{payment_intent};
  # what a refund names: the charge of the card on file
  $inv->{payment_intent} = new_id('pi');
  $inv->{charge}         = new_id('ch');
  $S{paid_by}{ $inv->{payment_intent} } = $inv->{id};
  $S{paid_by}{ $inv->{charge} }         = $inv->{id};
}

sub mark_void {
  my ($inv) = @_;
  $inv->{status}                        = 'void';
  $inv->{amount_remaining}              = 0;
  $inv->{status_transitions}{voided_at} = time;
}

sub mark_uncollectible {
  my ($inv) = @_;
  $inv->{status} = 'uncollectible';
  $inv->{status_transitions}{marked_uncollectible_at} = time;
}

sub invoice_finalize {
  my ($req, $id) = @_;
  my $inv = $S{invoices}{$id} // return no_such('invoice', $id, 'id');
  return stripe_error(400, 'invalid_request_error', 'invoice_not_editable',
    "This invoice is already finalized, you can't re-finalize a"
    . " non-draft invoice.") unless $inv->{status} eq 'draft';
  finalize($inv);
  return [200, $inv];
}

sub invoice_void {
  my ($req, $id) = @_;
  my $inv = $S{invoices}{$id} // return no_such('invoice', $id, 'id');
  my $st  = $inv->{status};
  return not_open("You can only void invoices that are open or"
    . " uncollectible. Invoice $id is $st.")
    unless $st eq 'open' || $st eq 'uncollectible';
  mark_void($inv);
  return [200, $inv];
}

# Stripe deletes only drafts; the object then answers {"deleted": true}.
sub invoice_delete {
  my ($req, $id) = @_;
  my $inv = $S{invoices}{$id} // return no_such('invoice', $id, 'id');
  return stripe_error(400, 'invalid_request_error', 'invoice_not_editable',
    "You can only delete draft invoices. Invoice $id is $inv->{status}.")
    unless $inv->{status} eq 'draft';
  delete $S{invoices}{$id};
  return [200, {id => $id, object => 'invoice', deleted => true}];
}

sub invoice_mark_uncollectible {
  my ($req, $id) = @_;
  my $inv = $S{invoices}{$id} // return no_such('invoice', $id, 'id');
  return not_open("You can only mark open invoices as uncollectible."
    . " Invoice $id is $inv->{status}.") unless $inv->{status} eq 'open';
  mark_uncollectible($inv);
  return [200, $inv];
}

sub invoice_pay {
  my ($req, $id) = @_;
  my $inv = $S{invoices}{$id} // return no_such('invoice', $id, 'id');
  my $st  = $inv->{status};
  return not_open("Invoice is already paid") if $st eq 'paid';
  return not_open("You can only pay open or uncollectible invoices."
    . " Invoice $id is $st.") if $st eq 'void';
  finalize($inv) if $st eq 'draft';    # Stripe finalizes a draft it pays
  return [200, $inv] if $inv->{status} eq 'paid';
  if (form_bool($req->{params}{paid_out_of_band}, false)) {
    mark_paid($inv, 1);
    return [200, $inv];
  }
  my $cus = $S{customers}{ $inv->{customer} } // {};
  $inv->{attempted} = true;
  $inv->{attempt_count}++;
  return no_payment_source(402, 'card_error') unless has_card($cus);
  return card_declined() if $S{declining}{ $inv->{customer} };
  mark_paid($inv);
  return [200, $inv];
}

# ---------------------------------------------------------------------------
# Subscriptions

sub subscription_create {
  my ($req) = @_;
  my $p   = $req->{params};
  my $cid = $p->{customer} // return missing_param('customer');
  my @items = ref $p->{items} eq 'ARRAY' ? grep { ref } @{ $p->{items} } : ();
  return missing_param('items') unless @items;
  for my $i (0 .. $#items) {
    my $pid = $items[$i]{price}
      // return missing_param("items[$i][price]");
    return no_such('price', $pid, "items[$i][price]")
      unless known_price($pid);
    positive_int($items[$i]{quantity}, 1)
      // return invalid_param("items[$i][quantity]",
      'Invalid positive integer');
  }
  my $meta = metadata_of($p) // return invalid_param('metadata',
    'Invalid object');
  my $cus = $S{customers}{$cid}
    // return no_such('customer', $cid, 'customer');
  my $pm  = $p->{default_payment_method};
  # default_incomplete: no payment attempted, the first invoice left open
  # and the subscription incomplete until it is paid
  my $unpaid = ($p->{payment_behavior} // '') eq 'default_incomplete';
  return no_payment_source(400, 'invalid_request_error')
    unless $unpaid || has_card($cus) || length($pm // '');
  return card_declined()
    if !$unpaid && ($S{declining}{$cid} || declining_token($pm));
  my $sub = new_subscription($cid, \@items, $meta, $pm, $unpaid);
  $S{subscriptions}{ $sub->{id} } = $sub;
  return [200, expand_subscription($sub, $p->{expand})];
}

sub new_subscription {
  my ($cid, $items, $meta, $pm, $unpaid) = @_;
  my $now = time;
  my $end = $now + $MONTH;
  my $id  = new_id('sub');
  my @si  = map {
    {
      id                   => new_id('si'),
      object               => 'subscription_item',
      created              => $now,
      current_period_start => $now,
      current_period_end   => $end,
      metadata             => {},
      price                => price_obj($_->{price}, 1),
      quantity             => positive_int($_->{quantity}, 1),
      subscription         => $id,
    }
  } @$items;
  my $inv = subscription_invoice($id, $cid, \@si, $meta, $end, $unpaid);
  return {
    id                     => $id,
    object                 => 'subscription',
    billing_cycle_anchor   => $now,
    cancel_at              => undef,
    cancel_at_period_end   => false,
    canceled_at            => undef,
    collection_method      => 'charge_automatically',
    created                => $now,
    currency               => 'usd',
    current_period_end     => $end,    # pre-2025; now on the items
    current_period_start   => $now,
    customer               => $cid,
    default_payment_method => $pm,
    ended_at               => undef,
    items                  => {
      object      => 'list',
      data        => \@si,
      has_more    => false,
      total_count => scalar @si,
      url         => "/v1/subscription_items?subscription=$id",
    },
    latest_invoice => $inv->{id},
    livemode       => false,
    metadata       => $meta,
    start_date     => $now,
    status         => $inv->{status} eq 'paid' ? 'active' : 'incomplete',
    trial_end      => undef,
    trial_start    => undef,
  };
}

# The first invoice of a subscription (a later period's: $cycle),
# already paid by the card on file (left open when $unpaid).
sub subscription_invoice {
  my ($sub_id, $cid, $items, $meta, $end, $unpaid, $cycle) = @_;
  my $inv = new_invoice(
    customer          => $cid,
    collection_method => 'charge_automatically',
    billing_reason    => $cycle ? 'subscription_cycle'
      : 'subscription_create',
    metadata          => {},
  );
  $inv->{subscription}         = $sub_id;             # pre-2025 shape
  $inv->{subscription_details} = {metadata => $meta};
  $inv->{parent} = {
    type                 => 'subscription_details',
    quote_details        => undef,
    subscription_details => {metadata => $meta, subscription => $sub_id},
  };
  for my $si (@$items) {
    push @{ $inv->{lines}{data} }, new_line(
      invoice      => $inv->{id},
      price        => $si->{price},
      quantity     => $si->{quantity},
      subscription => $sub_id,
      period_end   => $end,
      parent       => {
        type                      => 'subscription_item_details',
        invoice_item_details      => undef,
        subscription_item_details => {
          invoice_item      => undef,
          proration         => false,
          proration_details => {credited_items => undef},
          subscription      => $sub_id,
          subscription_item => $si->{id},
        },
      },
    );
  }
  recompute($inv);
  $S{invoices}{ $inv->{id} } = $inv;
  finalize($inv);
  mark_paid($inv) if $inv->{status} eq 'open' && !$unpaid;
  return $inv;
}

# Only "latest_invoice" is honoured; other expansions are ignored.
sub expand_subscription {
  my ($sub, $expand) = @_;
  my @want = ref $expand eq 'ARRAY' ? @$expand : ();
  return $sub unless grep { defined && /^latest_invoice\b/ } @want;
  return {%$sub, latest_invoice => $S{invoices}{ $sub->{latest_invoice} }};
}

sub subscription_get {
  my ($req, $id) = @_;
  my $sub = $S{subscriptions}{$id}
    // return no_such('subscription', $id, 'id');
  return [200, expand_subscription($sub, $req->{params}{expand})];
}

sub subscription_cancel {
  my ($req, $id) = @_;
  my $sub = $S{subscriptions}{$id}
    // return no_such('subscription', $id, 'id');
  return stripe_error(400, 'invalid_request_error', undef,
    "The subscription $id has already been canceled.")
    if $sub->{status} eq 'canceled';
  $sub->{status}      = 'canceled';
  $sub->{canceled_at} = $sub->{ended_at} = time;
  final_invoice($sub, $req->{params}) if form_bool($req->{params}{invoice_now},
    0);
  return [200, $sub];
}

# invoice_now: what is left to bill, at once; with prorate the unused
# time is credited, and the final invoice of a new subscription pays
# nothing (the credit goes to the customer's balance)
sub final_invoice {
  my ($sub, $p) = @_;
  my $inv = new_invoice(
    customer          => $sub->{customer},
    collection_method => 'charge_automatically',
    billing_reason    => 'subscription_update',
    metadata          => {},
  );
  $inv->{created}      = next_created($sub);
  $inv->{subscription} = $sub->{id};
  $inv->{parent} = {type => 'subscription_details', quote_details => undef,
    subscription_details => {metadata => $sub->{metadata},
      subscription => $sub->{id}}};
  if (form_bool($p->{prorate}, 0)) {
    # the unused time credited (all of it, for a subscription just made):
    # a negative total, nothing due, the credit to the customer's balance
    my ($first) = grep { ($_->{subscription} // '') eq $sub->{id}
                         && ($_->{billing_reason} // '')
                            eq 'subscription_create' }
                  values %{ $S{invoices} };
    my $credit = $first ? $first->{total} // 0 : 0;
    $inv->{total} = $inv->{subtotal} = -$credit;
    $inv->{amount_due} = 0;
    my $cus = $S{customers}{ $sub->{customer} };
    $cus->{balance} = ($cus->{balance} // 0) - $credit if $cus;
  }
  $S{invoices}{ $inv->{id} } = $inv;
  finalize($inv);    # 0 due: paid at once
  $sub->{latest_invoice} = $inv->{id};
}

# an invoice of a subscription made after its latest: created later
sub next_created {
  my ($sub) = @_;
  my $last = $S{invoices}{ $sub->{latest_invoice} // '' };
  my $t = time;
  return $last && $last->{created} >= $t ? $last->{created} + 1 : $t;
}

# ---------------------------------------------------------------------------
# Refunds: of an invoice's payment, by its payment_intent or charge.

sub refund_create {
  my ($req) = @_;
  my $p     = $req->{params};
  my $param = defined $p->{payment_intent} ? 'payment_intent' : 'charge';
  my $pay   = $p->{$param} // return missing_param('payment_intent');
  my $iid   = $S{paid_by}{$pay}
    // return no_such($param eq 'charge' ? 'charge' : 'payment_intent',
    $pay, $param);
  my $inv  = $S{invoices}{$iid} // return no_such('charge', $pay, $param);
  my $left = $inv->{amount_paid} - $inv->{amount_refunded};
  return stripe_error(400, 'invalid_request_error', 'charge_already_refunded',
    "Charge $inv->{charge} has already been refunded.")
    if $left <= 0;
  my $amount = positive_int($p->{amount}, $left)
    // return invalid_param('amount', 'Invalid positive integer');
  return stripe_error(400, 'invalid_request_error', 'amount_too_large',
    "Refund amount (\$$amount) is greater than unrefunded amount on"
    . " charge (\$$left)", param => 'amount') if $amount > $left;
  my $meta = metadata_of($p) // return invalid_param('metadata',
    'Invalid object');
  my $re = {
    id             => new_id('re'),
    object         => 'refund',
    amount         => $amount,
    charge         => $inv->{charge},
    created        => time,
    currency       => $inv->{currency},
    metadata       => $meta,
    payment_intent => $inv->{payment_intent},
    reason         => $p->{reason},
    status         => $S{refund_status},
  };
  $S{refunds}{ $re->{id} } = $re;
  refund_counts($re, $inv, $amount)
    unless $re->{status} eq 'failed' || $re->{status} eq 'canceled';
  return [200, $re];
}

# what a refund gives back (or, failed or canceled, takes back) of its
# invoice's payment
sub refund_counts {
  my ($re, $inv, $amount) = @_;
  $inv->{amount_refunded} += $amount;
  $inv->{refunded} = $inv->{amount_refunded} >= $inv->{amount_paid}
    ? true : false;
}

sub refund_get {
  my ($req, $id) = @_;
  my $re = $S{refunds}{$id} // return no_such('refund', $id, 'id');
  return [200, $re];
}

# A list, newest first, as Stripe pages it: customer, status (for
# subscriptions the default leaves out canceled ones; "all" lists every
# one), limit (1..100, 10), created[gte|gt|lte|lt], starting_after.
sub list_of {
  my ($req, $kind, $default_status) = @_;
  my $p = $req->{params};
  my $limit = $p->{limit} // 10;
  return invalid_param('limit', 'Invalid integer')
    unless $limit =~ /^\d+$/ && $limit >= 1 && $limit <= 100;
  my $status = $p->{status} // '';
  my $cr = ref $p->{created} eq 'HASH' ? $p->{created} : {};
  my %cmp = (gte => sub { $_[0] >= $_[1] }, gt => sub { $_[0] > $_[1] },
             lte => sub { $_[0] <= $_[1] }, lt => sub { $_[0] < $_[1] });
  my @all = sort {
    $b->{created} <=> $a->{created} || $b->{id} cmp $a->{id}
  } grep {
    my $o = $_;
    !(grep { defined $p->{$_} && ($o->{$_} // '') ne $p->{$_} }
      qw(customer subscription payment_intent charge))
      && ($status eq 'all' ? 1
          : $status ne '' ? $o->{status} eq $status
          : $default_status->($o))
      && !grep { defined $cr->{$_} && !$cmp{$_}->($o->{created}, $cr->{$_}) }
              keys %cmp
  } values %{ $S{$kind} };
  if (defined(my $after = $p->{starting_after})) {
    my ($i) = grep { $all[$_]{id} eq $after } 0 .. $#all;
    return no_such(substr($kind, 0, -1), $after, 'starting_after')
      unless defined $i;
    splice @all, 0, $i + 1;
  }
  my $more = @all > $limit;
  splice @all, $limit if $more;
  return [200, {object => 'list', data => \@all,
                has_more => $more ? true : false, url => "/v1/$kind"}];
}

sub subscription_list {
  my ($req) = @_;
  return list_of($req, 'subscriptions', sub { $_[0]{status} ne 'canceled' });
}

sub invoice_list {
  my ($req) = @_;
  my $out = list_of($req, 'invoices', sub { 1 });
  my $expand = $req->{params}{expand};
  return $out unless $out->[0] == 200 && grep { defined && $_ eq
    'data.payments' } ref $expand eq 'ARRAY' ? @$expand : ();
  $out->[1]{data} = [map { +{%$_, payments => invoice_payments($_)} }
    @{ $out->[1]{data} }];
  return $out;
}

sub refund_list {
  my ($req) = @_;
  return list_of($req, 'refunds', sub { 1 });
}

# ---------------------------------------------------------------------------
# Stripe API dispatch: one catch-all route so that logging, faults,
# authentication and idempotency wrap every endpoint the same way.

my $ID = qr{([A-Za-z0-9_]+)};
my @ROUTES = (
  [POST   => qr{^/v1/customers$},                 \&customer_create],
  [GET    => qr{^/v1/customers/$ID$},             \&customer_get],
  [POST   => qr{^/v1/customers/$ID$},             \&customer_update],
  [POST   => qr{^/v1/invoiceitems$},              \&invoice_item_create],
  [GET    => qr{^/v1/invoiceitems/$ID$},          \&invoice_item_get],
  [POST   => qr{^/v1/invoices$},                  \&invoice_create],
  [GET    => qr{^/v1/invoices$},                  \&invoice_list],
  [GET    => qr{^/v1/invoices/$ID$},              \&invoice_get],
  [DELETE => qr{^/v1/invoices/$ID$},             \&invoice_delete],
  [POST   => qr{^/v1/invoices/$ID/finalize$},     \&invoice_finalize],
  [POST   => qr{^/v1/invoices/$ID/void$},         \&invoice_void],
  [POST   => qr{^/v1/invoices/$ID/pay$},          \&invoice_pay],
  [POST   => qr{^/v1/invoices/$ID/mark_uncollectible$},
    \&invoice_mark_uncollectible],
  [POST   => qr{^/v1/subscriptions$},             \&subscription_create],
  [GET    => qr{^/v1/subscriptions$},             \&subscription_list],
  [GET    => qr{^/v1/subscriptions/$ID$},         \&subscription_get],
  [DELETE => qr{^/v1/subscriptions/$ID$},         \&subscription_cancel],
  [POST   => qr{^/v1/refunds$},                   \&refund_create],
  [GET    => qr{^/v1/refunds$},                   \&refund_list],
  [GET    => qr{^/v1/refunds/$ID$},               \&refund_get],
);

sub unrecognized {
  my ($req) = @_;
  return stripe_error(404, 'invalid_request_error', undef,
    "Unrecognized request URL ($req->{method}: $req->{path}). Please see"
    . " https://stripe.com/docs or we can help at"
    . " https://support.stripe.com/.", nosave => 1);
}

sub route {
  my ($req) = @_;
  for my $r (@ROUTES) {
    my ($method, $re, $handler) = @$r;
    next unless $req->{method} eq $method;
    my @cap = $req->{path} =~ $re or next;
    return $handler->($req, @cap);
  }
  return unrecognized($req);
}

sub read_request {
  my ($c) = @_;
  my $r      = $c->req;
  my $method = uc $r->method;
  my $raw    = $r->body // '';
  my $type   = $r->headers->content_type // '';
  my @pairs  = @{ $r->url->query->pairs };
  # Stripe bodies are form-encoded; anything else is not parsed.
  push @pairs, @{ Mojo::Parameters->new($raw)->pairs }
    if length $raw && ($type eq '' || $type =~ m{x-www-form-urlencoded}i);
  my $key = $r->headers->header('Idempotency-Key');
  return {
    method      => $method,
    path        => $r->url->path->to_string,
    params      => nest_params(\@pairs),
    raw         => $raw,
    auth        => $r->headers->authorization // '',
    idem_key    => $key,
    version     => $r->headers->header('Stripe-Version'),
    fingerprint => "$method " . $r->url->path_query . "\n$raw",
    gen         => $GENERATION,
  };
}

sub log_request {
  my ($req) = @_;
  my $entry = {
    seq                     => next_seq('log'),
    time                    => time,
    method                  => $req->{method},
    path                    => $req->{path},
    params                  => $req->{params},
    body                    => decode('UTF-8', $req->{raw}) // $req->{raw},
    idempotency_key         => $req->{idem_key},
    idempotency_key_present => defined $req->{idem_key} ? true : false,
    stripe_version          => $req->{version},
    status                  => undef,
    replayed                => false,
    dropped                 => false,
    client_gone             => false,
    cut                     => false,
    fault                   => undef,
  };
  push @{ $S{log} }, $entry;
  return $entry;
}

sub check_auth {
  my ($req) = @_;
  return if $req->{auth} =~ /^Bearer\s+sk_test_\S+$/;
  if ($req->{auth} !~ /^Bearer\s+(\S+)/) {
    return stripe_error(401, 'invalid_request_error', undef,
      'You did not provide an API key. You need to provide your API key in'
      . " the Authorization header, using Bearer auth (e.g. 'Authorization:"
      . " Bearer YOUR_SECRET_KEY').", nosave => 1);
  }
  my $key = $1;
  my $masked = length $key > 4 ? '*' x 4 . substr($key, -4) : $key;
  return stripe_error(401, 'invalid_request_error', 'api_key_invalid',
    "Invalid API Key provided: $masked", nosave => 1);
}

# Turn a handler result into the bytes and headers actually sent.
sub to_response {
  my ($out, $req) = @_;
  my ($status, $body) = @$out;
  my %h = (
    'Request-Id'     => new_id('req'),
    'Stripe-Version' => $req->{version} // $DEFAULT_API_VERSION,
  );
  $h{'Idempotency-Key'} = $req->{idem_key} if defined $req->{idem_key};
  return {status => $status, body => stripe_json($body), headers => \%h};
}

sub uses_idempotency {
  my ($req) = @_;
  return $req->{method} eq 'POST' && length($req->{idem_key} // '');
}

sub inflight_key { return "$_[0]{auth}\0$_[0]{idem_key}" }

sub replay {
  my ($req, $rec) = @_;
  return to_response(stripe_error(400, 'idempotency_error', undef,
    'Keys for idempotent requests can only be used with the same'
    . ' parameters they were first used with. Try using a key other than'
    . " '$req->{idem_key}' if you meant to execute a different request."),
    $req) if $rec->{fingerprint} ne $req->{fingerprint};
  my %h = %{ $rec->{headers} };
  $h{'Idempotent-Replayed'} = 'true';
  return {status => $rec->{status}, body => $rec->{body}, headers => \%h,
    replayed => 1};
}

# Authentication, idempotency, then the endpoint itself.
sub handle_unsafe {
  my ($req) = @_;
  if (my $deny = check_auth($req)) { return to_response($deny, $req) }
  my $idem = uses_idempotency($req);
  if ($idem && length $req->{idem_key} > 255) {
    return to_response(invalid_param('Idempotency-Key',
      'Idempotency-Key must be at most 255 characters long.'), $req);
  }
  my $saved = $idem ? ($S{idem}{ $req->{auth} } //= {}) : undef;
  if ($idem && (my $rec = $saved->{ $req->{idem_key} })) {
    return replay($req, $rec);
  }
  my $out = route($req);
  my $res = to_response($out, $req);
  $saved->{ $req->{idem_key} } = {%$res, fingerprint => $req->{fingerprint}}
    if $idem && !$out->[2];
  return $res;
}

sub handle {
  my ($req) = @_;
  my $res = eval { handle_unsafe($req) };
  return $res if $res;
  app->log->error("stub handler died: $@");
  return to_response(stripe_error(500, 'api_error', undef,
    'An unknown error occurred in the stub.'), $req);
}

# ---------------------------------------------------------------------------
# Faults

sub take_fault {
  my ($req) = @_;
  my $faults = $S{faults};
  for my $i (0 .. $#$faults) {
    my $f = $faults->[$i];
    next if length $f->{method} && $f->{method} ne $req->{method};
    next unless index($req->{path}, $f->{path_prefix}) == 0;
    $f->{remaining}-- if $f->{remaining} > 0;    # negative: forever
    splice @$faults, $i, 1 if $f->{remaining} == 0;
    return $f;
  }
  return;
}

sub fault_error {
  my ($st) = @_;
  return card_declined() if $st == 402;
  return stripe_error(429, 'rate_limit_error', 'rate_limit',
    'Too many requests hit the API too quickly. We recommend an'
    . ' exponential backoff of your requests.') if $st == 429;
  return stripe_error($st, 'api_error', undef,
    'Something went wrong on Stripe\'s end. (stub fault)') if $st >= 500;
  return stripe_error($st, 'invalid_request_error', undef,
    "Injected fault: HTTP $st (stub fault)");
}

# What a fault answers instead of the real response; undef when the fault
# only adds latency.
sub fault_response {
  my ($f, $req) = @_;
  return {drop => 1} if $f->{drop};
  return unless $f->{status};
  my $out = $f->{body} ? [$f->{status}, $f->{body}] : fault_error(
    $f->{status});
  my $res = to_response($out, $req);
  $res->{headers}{'Retry-After'} = $f->{retry_after} if $f->{status} == 429;
  return $res;
}

sub fault_summary {
  my ($f) = @_;
  return {map { $_ => $f->{$_} }
    qw(id status drop latency_ms after_commit oversize cut drip_ms
      drip_bytes drip_body drip_close saved)};
}

# The answer as an oversize or cut fault shapes it (a copy: the stored
# idempotency record keeps the real bytes).
sub shape_response {
  my ($f, $res) = @_;
  return $res if !$res || $res->{drop};
  my %r = %$res;
  my $n = $f->{oversize};
  $r{body} .= ' ' x ($n - length $r{body}) if $n && length $r{body} < $n;
  $r{cut} = 1 if $f->{cut};
  return \%r;
}

# ---------------------------------------------------------------------------
# The /v1 pipeline

sub later {
  my ($ms, $cb) = @_;
  return $cb->() unless $ms;
  Mojo::IOLoop->timer($ms / 1000 => $cb);
}

sub drop_connection {
  my ($tx) = @_;
  my $stream = Mojo::IOLoop->stream($tx->connection // return);
  $stream->close if $stream;
}

sub finish {
  my ($c, $tx, $entry, $res) = @_;
  $entry->{status}   = $res->{drop} ? undef : 0 + $res->{status};
  $entry->{dropped}  = true if $res->{drop};
  $entry->{replayed} = true if $res->{replayed};
  $entry->{cut}      = true if $res->{cut};
  app->log->info(sprintf '%s %s -> %s%s%s', $entry->{method},
    $entry->{path}, $res->{drop} ? 'dropped'
      : $res->{cut} ? "$res->{status} cut" : $res->{status},
    defined $entry->{idempotency_key}
      ? " key=$entry->{idempotency_key}" : '',
    $res->{replayed} ? ' (replayed)' : '');
  return drop_connection($tx) if $res->{drop};
  return if $tx->is_finished;    # the client went away meanwhile
  my $h = $c->res->headers;
  $h->header($_ => $res->{headers}{$_}) for keys %{ $res->{headers} };
  $h->content_type('application/json');
  if ($res->{cut}) {
    # the whole length promised, half of it sent, then the close
    $h->content_length(length $res->{body});
    $c->res->code($res->{status});
    return $c->write(substr($res->{body}, 0, length($res->{body}) >> 1)
      => sub { drop_connection($tx) });
  }
  $c->render(data => $res->{body}, status => $res->{status});
}

# The answer written straight to the connection a few bytes at a time
# (a drip fault): Mojo's own response is never rendered.
sub drip {
  my ($tx, $entry, $f, $res) = @_;
  $entry->{status}  = 0 + $res->{status};
  $entry->{dripped} = true;
  app->log->info(sprintf '%s %s -> %s dripped every %d ms', $entry->{method},
    $entry->{path}, $res->{status}, $f->{drip_ms});
  my $stream = Mojo::IOLoop->stream($tx->connection // return) or return;
  my %h = (%{ $res->{headers} }, 'Content-Type' => 'application/json',
    'Content-Length' => length $res->{body}, Connection => 'close');
  if ($f->{drip_close}) {
    delete $h{'Content-Length'};
    $h{'X-Accel-Buffering'} = 'no';
  }
  my $head = "HTTP/1.1 $res->{status} Stub\r\n"
    . join('', map { "$_: $h{$_}\r\n" } sort keys %h) . "\r\n";
  my $rest = $f->{drip_body} ? $res->{body} : $head . $res->{body};
  $stream->write($head) if $f->{drip_body};
  my $n = $f->{drip_bytes} > 0 ? $f->{drip_bytes} : 1;
  my $id;
  $id = Mojo::IOLoop->recurring($f->{drip_ms} / 1000 => sub {
    my $s = Mojo::IOLoop->stream($tx->connection // '');
    if (!$s || !length $rest) {    # the client left, or all was written
      Mojo::IOLoop->remove($id);
      $s->close_gracefully if $s;
      return;
    }
    $s->write(substr($rest, 0, $n, ''));
  });
}

sub conflict {
  my ($req) = @_;
  return to_response(stripe_error(409, 'idempotency_error', undef,
    'There is currently another in-progress request using this Idempotent'
    . ' Key (that probably means you submitted twice, and the other request'
    . " is still going through): $req->{idem_key}. Please try again later."),
    $req);
}

sub v1_request {
  my ($c)   = @_;
  my $req   = read_request($c);
  my $entry = log_request($req);
  my $tx    = $c->tx;    # keep the transaction alive across timers
  $c->render_later;
  # A caller gone before its answer (a worker killed, a call timed out)
  # is no longer held: a test waiting for "held" must not take a call of
  # an earlier test, whose latency has yet to run out, for its own.
  $tx->on(finish => sub {
    $entry->{client_gone} = true
      unless defined $entry->{status} || $entry->{dropped};
  });
  my $done = sub { finish($c, $tx, $entry, $_[0]) };
  my $ik   = uses_idempotency($req) ? inflight_key($req) : undef;
  return $done->(conflict($req)) if $ik && $S{inflight}{$ik};
  $S{inflight}{$ik} = 1 if $ik;
  my $unlock = sub { delete $S{inflight}{$ik} if $ik };
  my $run    = sub { my $r = handle($req); $unlock->(); $r };
  my $fault  = take_fault($req);
  return $done->($run->()) unless $fault;
  $entry->{fault} = fault_summary($fault);
  my $ms = $fault->{latency_ms};
  if ($fault->{drip_ms}) {
    # Stripe did the work; its answer comes a few bytes at a time.
    my $real = $run->();
    return later($ms, sub {
      drip($tx, $entry, $fault, fault_response($fault, $req) // $real);
    });
  }
  if ($fault->{after_commit} || $fault->{oversize} || $fault->{cut}) {
    # Stripe did the work; only the answer is slow, wrong or lost.
    my $real = $run->();
    return later($ms, sub {
      $done->(shape_response($fault, fault_response($fault, $req) // $real));
    });
  }
  later($ms, sub {
    if ($req->{gen} != $GENERATION) {    # a reset happened meanwhile
      return $done->({drop => 1});
    }
    if (my $res = fault_response($fault, $req)) {
      $unlock->();
      # Stripe keeps a 500 under the key "regardless of whether it
      # succeeds or fails", and a retry with the key gets it again.
      $S{idem}{ $req->{auth} }{ $req->{idem_key} } =
        {%$res, fingerprint => $req->{fingerprint}}
        if $fault->{saved} && $ik && !$res->{drop};
      return $done->($res);
    }
    $done->($run->());
  });
}

any '/v1/*rest' => sub { v1_request(shift) };

# ---------------------------------------------------------------------------
# Webhooks

my $UA = Mojo::UserAgent->new(
  connect_timeout    => 5,
  inactivity_timeout => 30,
  request_timeout    => 30,
);

sub sign {
  my ($body, $ts, $secret) = @_;
  return "t=$ts,v1=" . hmac_sha256_hex("$ts.$body", $secret);
}

sub new_event {
  my ($type, $object, $args) = @_;
  my %data = (object => $object);
  $data{previous_attributes} = $args->{previous_attributes}
    if ref $args->{previous_attributes} eq 'HASH';
  return {
    id               => $args->{id} // $args->{event_id} // new_id('evt'),
    object           => 'event',
    api_version      => $args->{api_version} // $DEFAULT_API_VERSION,
    created          => $args->{created} // time,
    data             => \%data,
    livemode         => false,
    pending_webhooks => 1,
    request          => {id => undef, idempotency_key => undef},
    type             => $type,
  };
}

# POST the event to $url, signed like Stripe does, then answer the control
# call with what the receiver said (plus %$extra).
sub deliver {
  my ($c, $url, $event, $args, $extra) = @_;
  my $body = defined $args->{raw_body}
    ? encode('UTF-8', $args->{raw_body}) : stripe_json($event);
  my $ts     = $args->{timestamp} // time;
  my $secret = $args->{secret} // $opt{'webhook-secret'};
  my $sig    = $args->{signature} // sign($body, $ts, $secret);
  my $tx     = $c->tx;
  $c->render_later;
  my %headers = (
    'Content-Type'     => 'application/json; charset=utf-8',
    'Stripe-Signature' => $sig,
    'User-Agent'       => 'Stripe/1.0 (+https://stripe.com/docs/webhooks)',
  );
  $UA->post($url => \%headers => $body => sub {
    my (undef, $dtx) = @_;
    my %out = (%$extra, event_id => $event->{id}, signature => $sig);
    if (my $code = $dtx->res->code) {
      my $rb = $dtx->res->body;
      %out = (%out, delivered => true, status => 0 + $code,
        body => decode('UTF-8', $rb) // $rb,
        json => scalar eval { decode_json($rb) });
    }
    else {
      %out = (%out, delivered => false,
        error => $dtx->error ? $dtx->error->{message} : 'no response');
    }
    app->log->info("webhook $event->{type} -> $url: "
      . ($out{status} // "failed ($out{error})"));
    $c->render(json => \%out) unless $tx->is_finished;
  });
}

# ---------------------------------------------------------------------------
# Control API

sub json_in {
  my ($c) = @_;
  return {} unless length($c->req->body // '');
  my $in = $c->req->json;
  return ref $in eq 'HASH' ? $in : undef;
}

sub bad {
  my ($c, $status, $message) = @_;
  return $c->render(status => $status, json => {error => $message});
}

get '/_stub/health' => sub { shift->render(json => {ok => true}) };

post '/_stub/reset' => sub {
  reset_state();
  shift->render(json => {ok => true});
};

post '/_stub/customers' => sub {
  my $c  = shift;
  my $in = json_in($c) // return bad($c, 400, 'expected a JSON object');
  my $id = $in->{id} // new_id('cus');
  return bad($c, 400, 'id must be a string') if ref $id;
  my $cus = customer_obj(
    id             => $id,
    email          => $in->{email},
    name           => $in->{name},
    description    => $in->{description},
    metadata       => ref $in->{metadata} eq 'HASH' ? $in->{metadata} : {},
    payment_method => $in->{card} ? 'pm_card_visa' : undef,
    source         => $in->{source} ? new_id('card') : undef,
  );
  $S{customers}{$id} = $cus;
  if ($in->{decline}) { $S{declining}{$id} = 1 }
  else                { delete $S{declining}{$id} }
  $c->render(json => $cus);
};

post '/_stub/prices' => sub {
  my $c  = shift;
  my $in = json_in($c) // return bad($c, 400, 'expected a JSON object');
  my $id = $in->{id};
  return bad($c, 400, 'id is required') unless defined $id && !ref $id;
  my $amount = $in->{unit_amount} // $DEFAULT_UNIT_AMOUNT;
  return bad($c, 400, 'unit_amount must be a non-negative integer')
    unless !ref $amount && $amount =~ /^\d+$/;
  my $price = made_up_price($id, $in->{recurring});
  %$price = (%$price, id => $id, unit_amount => 0 + $amount,
    unit_amount_decimal => decimal($amount),
    currency => $in->{currency} // 'usd',
    product  => $in->{product} // 'prod_stub');
  $S{prices}{$id} = $price;
  $c->render(json => $price);
};

get '/_stub/state' => sub {
  my $c = shift;
  $c->render(json => {
    customers     => $S{customers},
    invoices      => $S{invoices},
    invoiceitems  => $S{invoiceitems},
    subscriptions => $S{subscriptions},
    refunds       => $S{refunds},
    prices        => $S{prices},
    declining     => [sort keys %{ $S{declining} }],
    faults        => $S{faults},
    log           => $S{log},
  });
};

post '/_stub/faults' => sub {
  my $c  = shift;
  my $in = json_in($c) // return bad($c, 400, 'expected a JSON object');
  my $count = $in->{count} // 1;
  my $f = {
    id           => next_seq('fault'),
    path_prefix  => $in->{path_prefix} // '/v1/',
    method       => uc($in->{method} // ''),
    status       => int($in->{status} // 0),
    count        => int $count,
    remaining    => int $count,
    latency_ms   => int($in->{latency_ms} // 0),
    drop         => $in->{drop} ? true : false,
    after_commit => $in->{after_commit} ? true : false,
    oversize     => int($in->{oversize} // 0),
    cut          => $in->{cut} ? true : false,
    drip_ms      => int($in->{drip_ms} // 0),
    drip_bytes   => int($in->{drip_bytes} // 1),
    drip_body    => $in->{drip_body} ? true : false,
    drip_close   => $in->{drip_close} ? true : false,
    saved        => $in->{saved} ? true : false,
    retry_after  => '' . ($in->{retry_after} // 1),
  };
  $f->{body} = $in->{body} if ref $in->{body} eq 'HASH';
  return bad($c, 400,
    'a fault needs status, drop, latency_ms, oversize, cut or drip_ms')
    unless $f->{status} || $f->{drop} || $f->{latency_ms} > 0
      || $f->{oversize} > 0 || $f->{cut} || $f->{drip_ms} > 0;
  return bad($c, 400, 'drip_ms combines with no drop, oversize or cut')
    if $f->{drip_ms} && ($f->{drop} || $f->{oversize} || $f->{cut});
  return bad($c, 400, 'status must be 100..599')
    if $f->{status} && ($f->{status} < 100 || $f->{status} > 599);
  return bad($c, 400, 'saved needs a 5xx status, without after_commit,'
    . ' oversize, cut or drip_ms')
    if $f->{saved} && ($f->{status} < 500 || $f->{after_commit}
      || $f->{oversize} || $f->{cut} || $f->{drip_ms});
  return bad($c, 400, 'count must not be 0 (negative: forever)')
    unless $f->{count};
  push @{ $S{faults} }, $f;
  $c->render(json => {ok => true, fault => $f,
    queued => scalar @{ $S{faults} }});
};

get '/_stub/faults' => sub {
  shift->render(json => {faults => $S{faults}});
};

del '/_stub/faults' => sub {
  $S{faults} = [];
  shift->render(json => {ok => true});
};

# Invoice transitions driven by the "customer" or the dashboard.
my %CONTROL_ACTION = (
  pay => {
    from  => {open => 1, uncollectible => 1},
    apply => sub { mark_paid($_[0]) },
    event => 'invoice.paid',
  },
  void => {
    from  => {open => 1, uncollectible => 1},
    apply => \&mark_void,
    event => 'invoice.voided',
  },
  mark_uncollectible => {
    from  => {open => 1},
    apply => \&mark_uncollectible,
    event => 'invoice.marked_uncollectible',
  },
);

post '/_stub/invoices/:id/:op' =>
  [op => [keys %CONTROL_ACTION]] => sub {
  my $c   = shift;
  my $in  = json_in($c) // return bad($c, 400, 'expected a JSON object');
  my $act = $CONTROL_ACTION{ $c->param('op') };
  my $id  = $c->param('id');
  my $inv = $S{invoices}{$id} // return bad($c, 404, "no invoice $id");
  return bad($c, 409, "invoice $id is $inv->{status}")
    unless $act->{from}{ $inv->{status} };
  $act->{apply}->($inv);
  return $c->render(json => {invoice => $inv}) unless $in->{webhook_url};
  my $event = new_event($act->{event}, $inv, $in);
  deliver($c, $in->{webhook_url}, $event, $in, {invoice => $inv});
};

# an invoice made earlier than it was: {"seconds"} taken off its created
# (a reconciliation's lookup window against a realistic age)
post '/_stub/invoices/:id/backdate' => sub {
  my $c   = shift;
  my $in  = json_in($c) // return bad($c, 400, 'expected a JSON object');
  my $id  = $c->param('id');
  my $inv = $S{invoices}{$id} // return bad($c, 404, "no invoice $id");
  $inv->{created} -= int($in->{seconds} // 0);
  return $c->render(json => {invoice => $inv});
};

# the next period of a subscription: its invoice, paid by the card
post '/_stub/subscriptions/:id/renew' => sub {
  my $c   = shift;
  my $sub = $S{subscriptions}{ $c->param('id') }
    // return bad($c, 404, 'no subscription ' . $c->param('id'));
  return bad($c, 409, "subscription $sub->{id} is $sub->{status}")
    if $sub->{status} eq 'canceled';
  my $inv = subscription_invoice($sub->{id}, $sub->{customer},
    $sub->{items}{data}, $sub->{metadata}, time + $MONTH, 0, 1);
  $inv->{created} = next_created($sub);
  $sub->{latest_invoice} = $inv->{id};
  $c->render(json => {invoice => $inv});
};

post '/_stub/refund_status' => sub {
  my $c  = shift;
  my $in = json_in($c) // return bad($c, 400, 'expected a JSON object');
  my $st = $in->{status} // '';
  return bad($c, 400, 'status: succeeded, pending, requires_action, failed'
    . ' or canceled') unless $st =~ /^(succeeded|pending|requires_action
    |failed|canceled)$/x;
  $S{refund_status} = $st;
  $c->render(json => {ok => true});
};

my %REFUND_TO = (succeed => 'succeeded', fail => 'failed',
  cancel => 'canceled');

post '/_stub/refunds/:id/:op' => [op => [keys %REFUND_TO]] => sub {
  my $c  = shift;
  my $re = $S{refunds}{ $c->param('id') }
    // return bad($c, 404, 'no refund ' . $c->param('id'));
  return bad($c, 409, "refund $re->{id} is $re->{status}")
    unless $re->{status} eq 'pending' || $re->{status} eq 'requires_action';
  $re->{status} = $REFUND_TO{ $c->param('op') };
  # the money that did not go back is refundable again
  refund_counts($re, $S{invoices}{ $S{paid_by}{ $re->{charge} } },
    -$re->{amount}) unless $re->{status} eq 'succeeded';
  $c->render(json => {refund => $re});
};

my %STORES = (cus => 'customers', in => 'invoices', ii => 'invoiceitems',
  sub => 'subscriptions', re => 'refunds');

post '/_stub/webhook' => sub {
  my $c  = shift;
  my $in = json_in($c) // return bad($c, 400, 'expected a JSON object');
  my $url = $in->{url} // return bad($c, 400, 'url is required');
  my $type = $in->{type} // return bad($c, 400, 'type is required');
  my $obj = $in->{object};
  # "object_id" sends the stored object, e.g. a subscription.
  if (!$obj && defined(my $oid = $in->{object_id})) {
    my ($prefix) = $oid =~ /^([a-z]+)_/;
    my $store = $STORES{ $prefix // '' };
    $obj = $store && $S{$store}{$oid}
      // return bad($c, 404, "no stored object $oid");
  }
  $obj //= {};
  return bad($c, 400, 'object must be a JSON object') if ref $obj ne 'HASH';
  deliver($c, $url, new_event($type, $obj, $in), $in, {});
};

# ---------------------------------------------------------------------------
# Hosted invoice page: enough for a human following a paymentUrl.

get '/i/:id' => sub {
  my $c   = shift;
  my $inv = $S{invoices}{ $c->param('id') }
    // return $c->render(status => 404, text => 'No such invoice');
  my $html = sprintf '<!doctype html><title>Invoice %s</title>'
    . '<h1>Invoice %s</h1><p>Status: %s</p><p>Amount due: $%.2f</p>',
    map { xml_escape($_) } $inv->{number} // $inv->{id},
    $inv->{number} // $inv->{id}, $inv->{status}, $inv->{amount_due} / 100;
  $c->render(data => $html, format => 'html');
};

any '/*whatever' => {whatever => ''} => sub {
  my $c = shift;
  $c->render(status => 404, json => {error => {
    type    => 'invalid_request_error',
    message => 'Unrecognized request URL (' . $c->req->method . ': '
      . $c->req->url->path . ').',
  }});
};

# ---------------------------------------------------------------------------
# Start

sub write_pidfile {
  my ($file) = @_;
  open my $fh, '>', "$file.tmp" or die "cannot write $file.tmp: $!\n";
  print $fh "$$\n";
  close $fh or die "cannot write $file.tmp: $!\n";
  rename "$file.tmp", $file or die "cannot rename to $file: $!\n";
}

sub main {
  app->mode('production');
  app->secrets(['linegate-stripe-stub']);
  app->log($opt{log}
    ? Mojo::Log->new(path => $opt{log}, level => 'info')
    : Mojo::Log->new(level => 'warn'));
  my ($host, $port) = $opt{listen} =~ /^(.+):(\d+)$/
    or die "--listen must be HOST:PORT\n";
  my $daemon = Mojo::Server::Daemon->new(
    app                => app,
    listen             => ["http://$host:$port"],
    silent             => 1,
    inactivity_timeout => 600,    # latency faults may be long
  );
  $daemon->start;
  $PUBLIC = "$host:" . $daemon->ports->[0];
  write_pidfile($opt{pidfile}) if $opt{pidfile};
  app->log->info("stripe stub listening on http://$PUBLIC (pid $$)");
  local $SIG{INT} = local $SIG{TERM} = sub { Mojo::IOLoop->stop };
  Mojo::IOLoop->start;
  unlink $opt{pidfile} if $opt{pidfile};
}

main();
