#!/usr/bin/perl
# docs/openapi.yaml: a valid OpenAPI 3.1 document that describes every
# route linegate serves (the linegate_api locations of
# conf/linegate.conf.in, with the methods the module accepts there, and
# the operator API's routes), with distinct names per API; and, with the
# module built, the Stripe webhook and operator API answers match it
# (t/1*.t and t/2*.t check the Lines and Provisioning APIs' answers).

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";

use Digest::SHA qw(hmac_sha256_hex);
use JSON::Validator;
use Mojo::File qw(path);
use Mojo::JSON qw(encode_json);
use Mojo::Transaction::HTTP;
use JSON::PP ();
use Test::More;

use LG::OpenAPI qw(answer_matches);
use LG::Stack;

my $ROOT = $LG::Stack::ROOT;
my $FILE = "$ROOT/docs/openapi.yaml";

my @METHODS = qw(get put post delete options head patch trace);

# the document as written (references not followed)
my $jv = JSON::Validator->new;
my $raw = $jv->store->get($jv->store->load($FILE));
my $paths = $raw->{paths} // {};

# every operation: [path, method, operation, path item]
my @ops = map {
    my ($p, $item) = ($_, $paths->{$_});
    map { [$p, $_, $item->{$_}, $item] } grep { $item->{$_} } @METHODS;
} sort keys %$paths;

# every value under $node, with its JSON pointer: [$pointer, $value]
sub walk {
    my ($node, $ptr, $out) = @_;
    push @$out, [$ptr, $node];
    if (ref $node eq 'HASH') {
        for my $k (sort keys %$node) {
            (my $e = $k) =~ s/~/~0/g;
            $e =~ s{/}{~1}g;
            walk($node->{$k}, "$ptr/$e", $out);
        }
    }
    elsif (ref $node eq 'ARRAY') {
        walk($node->[$_], "$ptr/$_", $out) for 0 .. $#$node;
    }
    return $out;
}

subtest 'a valid OpenAPI 3.1 document' => sub {
    like($raw->{openapi} // '', qr/^3\.1\.\d+$/, 'openapi: 3.1.x');

    my $doc = eval { LG::OpenAPI::document() };
    ok($doc, 'JSON::Validator loads it and resolves its references')
        or return diag($@);
    isa_ok($doc, 'JSON::Validator::Schema::OpenAPIv3');
    like($doc->specification, qr{/oas/3\.1/}, 'as an OpenAPI 3.1 document');

    # The OpenAPI 3.1 schema (spec.openapis.org/oas/3.1/schema), as far as
    # JSON::Validator's JSON Schema 2019-09 goes: unevaluatedProperties
    # are additionalProperties here, Schema Objects are any JSON Schema.
    my $meta = JSON::Validator->new->schema(do { local $/; <DATA> })
               ->schema;
    my @errors = $meta->validate($raw);
    ok(!@errors, 'the document matches the OpenAPI 3.1 schema')
        or diag(join "\n", @errors);

    # every reference points at something
    my @refs = grep { ref $_->[1] eq 'HASH' && defined $_->[1]{'$ref'}
                      && !ref $_->[1]{'$ref'} } @{ walk($raw, '', []) };
    ok(@refs > 100, scalar(@refs) . ' references');
    my @broken = grep { $_->[1]{'$ref'} !~ m{^#(/.*)$}
                        || !defined $doc->get($1) } @refs;
    ok(!@broken, 'every $ref resolves')
        or diag(join "\n", map {"$_->[0]: $_->[1]{'\$ref'}"} @broken);

    # what openapi-spec-validator also checks
    my %ids;
    $ids{ $_->[2]{operationId} // '' }++ for @ops;
    ok(!$ids{''}, 'every operation has an operationId');
    my @dup = grep { $ids{$_} > 1 } sort keys %ids;
    ok(!@dup, 'operationIds are unique') or diag("@dup");

    my %schemes = %{ $raw->{components}{securitySchemes} // {} };
    for my $op (@ops) {
        my ($p, $m, $o, $item) = @$op;
        my %params;
        for my $ref (@{ $item->{parameters} // [] },
                     @{ $o->{parameters} // [] })
        {
            my $prm = ($ref->{'$ref'} // '') =~ m{^#(/.*)$} ? $doc->get($1)
                                                             : $ref;
            $params{ $prm->{name} } = $prm if $prm->{in} eq 'path';
        }
        my @in_path = $p =~ /\{([^}]+)\}/g;
        is_deeply([sort keys %params], [sort @in_path],
                  "$m $p: its path parameters are declared");
        ok(!grep({ !$_->{required} } values %params),
           "$m $p: path parameters are required");

        my @req = @{ $o->{security} // $raw->{security} // [] };
        ok(defined $o->{security} || defined $raw->{security},
           "$m $p: says which security applies");
        my @unknown = grep { !$schemes{$_} } map { keys %$_ } @req;
        ok(!@unknown, "$m $p: its security schemes are declared")
            or diag("@unknown");
    }
};

subtest 'one tag and distinct names per API' => sub {
    my %api = ('/api/' => 'lines', '/accounts/' => 'provisioning',
               '/webhooks/' => 'webhooks', '/_linegate/' => 'operator',
               '/metrics' => 'metrics');
    my %prefix = (lines => 'Lines', provisioning => 'Provision',
                  webhooks => 'Webhook', operator => 'Operator',
                  metrics => 'Metrics');

    like($raw->{info}{description} // '', qr/linegate is an nginx/,
         'info.description says what linegate is');
    is_deeply([sort map { $_->{name} } @{ $raw->{tags} // [] }],
              [sort values %api], 'a tag per API');
    ok(!grep({ !length($_->{description} // '') } @{ $raw->{tags} }),
       'every tag is described');

    for my $op (@ops) {
        my ($p, $m, $o) = @$op;
        my ($pre) = grep { index($p, $_) == 0 } keys %api;
        ok($pre, "$p: under a known prefix") or next;
        is_deeply($o->{tags}, [$api{$pre}], "$m $p: tagged $api{$pre}");
        my $id_re = qr/^(?:\Q$api{$pre}\E|\l$prefix{$api{$pre}})[A-Z]/;
        like($o->{operationId} // '', $id_re,
             "$m $p: operationId named after its API");

        # every answer is JSON and carries X-Request-Id, but Prometheus's
        if ($api{$pre} eq 'metrics') {
            ok($o->{responses}{200}{content}{'text/plain'},
               "$m $p 200: Prometheus's text format");
            next;
        }
        for my $status (sort keys %{ $o->{responses} }) {
            my $r = $o->{responses}{$status};
            $r = LG::OpenAPI::document()->get($1)
                if ($r->{'$ref'} // '') =~ m{^#(/.*)$};
            ok($r->{headers}{'X-Request-Id'} && $r->{content}
               && $r->{content}{'application/json'},
               "$m $p $status: JSON with X-Request-Id");
        }
    }

    my $names = join '|', values %prefix;
    for my $kind (qw(schemas responses parameters headers requestBodies)) {
        my @bad = grep { !/^(?:$names)[A-Z]/ }
                  keys %{ $raw->{components}{$kind} // {} };
        ok(!@bad, "components/$kind are named after their API")
            or diag("@bad");
    }
    my @bad = grep { !/^(?:lines|provision|operator)[A-Z]/ }
              keys %{ $raw->{components}{securitySchemes} // {} };
    ok(!@bad, 'security schemes are named after their API') or diag("@bad");
};

# The methods the module accepts per linegate_api name (its API table) and
# the operator API's routes, read from the sources.
my $module = path("$ROOT/src/ngx_http_linegate_module.c")->slurp;
my %api_methods;
while ($module =~ /\{\s*ngx_string\("(\w+)"\),\s*NGX_HTTP_LINEGATE_API_\w+,
                   \s*([A-Z_|]+)\s*\}/gx)
{
    my ($name, $m) = ($1, $2);
    $api_methods{$name} = [sort map { /NGX_HTTP_LINEGATE_(\w+)/ ? lc $1 : () }
                           split /\|/, $m];
}

# a route is a row { "pattern", NGX_HTTP_<METHOD>, ... } of a route table
# of src/ngx_http_linegate_operator*.c
my @routes;
for my $file (sort glob "$ROOT/src/ngx_http_linegate_operator*.c") {
    my $src = path($file)->slurp;
    while ($src =~ /\{\s*"([a-z*\/]+)",\s*
                    NGX_HTTP_(GET|PUT|POST|DELETE|PATCH)\b/gx)
    {
        push @routes, [$1, lc $2];
    }
}

subtest 'every linegate_api location is described' => sub {
    my $conf = path("$ROOT/conf/linegate.conf.in")->slurp;
    my @locs;
    while ($conf =~ /location\s+(=\s*)?(\S+)\s*\{([^{}]*)\}/g) {
        my ($exact, $uri, $body) = ($1, $2, $3);
        push @locs, [$uri, !!$exact, $1]
            if $body =~ /\blinegate_api\s+(\w+)\s*;/;
    }
    ok(@locs >= 9, scalar(@locs) . ' linegate_api locations');
    ok(keys %api_methods >= 9, 'the module\'s API table is read');

    my %seen;
    for my $loc (@locs) {
        my ($uri, $exact, $api) = @$loc;
        my $methods = $api_methods{$api};
        ok($methods, "$api: in the module's API table") or next;

        my @docs = $exact ? grep({ $_ eq $uri } keys %$paths)
                          : grep({ index($_, $uri) == 0 } keys %$paths);
        ok(@docs, "location $uri ($api): has a path in the document")
            or next;
        $seen{$_}++ for @docs;

        next if "@$methods" eq 'any';    # the operator API: its routes
        for my $p (@docs) {
            my @have = sort grep { $paths->{$p}{$_} } @METHODS;
            is_deeply(\@have, $methods,
                      "$p: the methods $api accepts (@$methods)");
        }
    }

    my @orphans = grep { !$seen{$_} } sort keys %$paths;
    ok(!@orphans, 'every path of the document is served by a location')
        or diag("@orphans");
};

subtest 'every operator route is described' => sub {
    ok(@routes >= 17, scalar(@routes) . ' operator routes');

    my %want = map {
        (my $p = "/_linegate/$_->[0]") =~ s/\*/{}/g;
        ("$_->[1] $p" => 1);
    } @routes;
    my %have = map {
        (my $p = $_->[0]) =~ s/\{[^}]+\}/{}/g;
        ("$_->[1] $p" => 1);
    } grep { index($_->[0], '/_linegate/') == 0 } @ops;

    is_deeply([sort keys %have], [sort keys %want],
              'the operator paths and methods are the module\'s routes');
};

# What the webhook and operator endpoints answer, against the document.
# A status an operation does not list is nginx's own error page: every
# operation has a `default` response, the API's error format, and the
# validator of t/lib holds an unlisted status to it (JSON::Validator
# checks nothing of a status with neither).
subtest 'an unlisted status: the default error' => sub {
    for my $op (@ops) {
        my ($p, $m, $o) = @$op;
        ok($o->{responses}{default}, "$m $p: a default response");
    }

    my $answer = sub {
        my ($method, $path, $code, $body) = @_;
        my $tx = Mojo::Transaction::HTTP->new;
        $tx->req->method($method)->url->parse($path);
        $tx->res->code($code)->body(encode_json($body));
        $tx->res->headers->header('X-Request-Id' => 'a' x 32);
        $tx->res->headers->content_type('application/json; charset=utf-8');
        return [LG::OpenAPI::invalid($tx)];
    };
    my @cases = (
        # [what, method, path, status, body, valid]
        ['Lines 418, an error', GET => '/api/lines/by-user', 418,
         {error => "I'm a teapot"}, 1],
        ['Lines 418, a list', GET => '/api/lines/by-user', 418,
         {lines => []}, 0],
        ['Lines 207, an error', GET => '/api/lines/by-user', 207,
         {error => 'Multi-Status'}, 0],
        ['Provisioning 418, Sendblue\'s error', POST =>
         '/accounts/lines/provision-confirm', 418,
         {status => 'ERROR', message => "I'm a teapot"}, 1],
        ['Provisioning 418, a purchase', POST =>
         '/accounts/lines/provision-confirm', 418,
         {status => 'OK', phone_number => '+14155551234'}, 0],
        ['webhook 418, a receipt', POST => '/webhooks/stripe', 418,
         {received => JSON::PP::true}, 0],
        ['operator 418, an error', GET => '/_linegate/inventory', 418,
         {error => "I'm a teapot"}, 1],
        ['operator 418, a workspace', GET =>
         '/_linegate/workspaces/org_x', 418, {plan => 'growth'}, 0],
    );
    for my $c (@cases) {
        my ($what, $method, $path, $code, $body, $valid) = @$c;
        my $errors = $answer->($method, $path, $code, $body);
        if ($valid) {
            ok(!@$errors, "$what: matches") or diag("@$errors");
        }
        else {
            ok(scalar @$errors, "$what: does not match");
        }
    }
};

SKIP: {
    my $module_so = $ENV{LG_MODULE}
                    // "$ROOT/build/ngx_http_linegate_module.so";
    skip "no module at $module_so (make, or set LG_MODULE)", 2
        unless -f $module_so;

    my $s = LG::Stack->new(stub => 0)->start;
    my $r = $s->redis;
    my $ua = $s->ua;
    my $n = 0;

    my $line = sub {
        my ($w, %f) = @_;
        my $id = sprintf('%08x', time)
                 . join '', map { sprintf '%02x', int rand 256 } 1 .. 8;
        $r->hset("lg:{ws:$w}:lr:$id", firstName => 'Ada',
                 lastName => 'Lovelace', channelType => 'phone',
                 lineType => 'purchased', provisioningStatus => 'provisioning',
                 paymentStatus => 'not_required',
                 createdAt => '2026-01-01T00:00:00.000Z',
                 updatedAt => '2026-01-01T00:00:00.000Z', %f);
        $r->set("lg:line:$id", $w);
        return $id;
    };

    my $op = sub {
        my ($status, $name, $method, $p, @rest) = @_;
        my $tx = $s->op($method, $p, @rest);
        is($tx->res->code, $status, "$name: $status")
            or diag($tx->res->body);
        answer_matches($tx, $name);
        return $tx->res->json // {};
    };

    subtest 'operator answers match' => sub {
        my $b = $op->(200, 'workspace created', PUT => '/workspaces/org_oa',
                      {plan => 'growth', subscriptionStatus => 'active',
                       stripeCustomerId => 'cus_oa'});
        $op->(200, 'workspace updated', PUT => '/workspaces/org_oa',
              {subscriptionStatus => undef, stripeCustomerId => undef});
        $op->(200, 'workspace', GET => '/workspaces/org_oa');
        $op->(404, 'no such workspace', GET => '/workspaces/org_none');
        $op->(400, 'invalid workspace id', GET => '/workspaces/a.b');
        $op->(400, 'plan required', PUT => '/workspaces/org_new', {});
        $op->(400, 'bad plan', PUT => '/workspaces/org_oa', {plan => 'max'});
        $op->(400, 'malformed body', PUT => '/workspaces/org_oa', \'{x');
        $op->(405, 'wrong method', DELETE => '/workspaces/org_oa');

        $b = $op->(201, 'API key', POST => '/workspaces/org_oa/keys');
        $op->(404, 'API key, no workspace', POST => '/workspaces/org_x/keys');
        $op->(200, 'API keys', GET => '/workspaces/org_oa/keys');
        $op->(404, 'API keys, no workspace', GET => '/workspaces/org_x/keys');
        $op->(200, 'key revoked',
              DELETE => "/workspaces/org_oa/keys/$b->{keyId}");
        $op->(404, 'key revoked twice',
              DELETE => "/workspaces/org_oa/keys/$b->{keyId}");
        $op->(400, 'invalid key id', DELETE => '/workspaces/org_oa/keys/k1');

        $op->(200, 'account created', PUT => '/accounts/acct_oa',
              {plan => 'inbound_only', stripeCustomerId => 'cus_agent',
               api_provision_daily => 5});
        $op->(200, 'account updated', PUT => '/accounts/acct_oa',
              {api_provision_daily => undef, api_provision_monthly => 20});
        $op->(400, 'bad limit', PUT => '/accounts/acct_oa',
              {api_provision_daily => -1});
        $op->(200, 'account, no timestamps', GET => '/accounts/acct_oa');
        $r->hset('lg:{acct:acct_raw}', plan => 'inbound_only');
        $op->(200, 'account written by hand', GET => '/accounts/acct_raw');
        $op->(404, 'no such account', GET => '/accounts/acct_none');
        $op->(201, 'credentials', POST => '/accounts/acct_oa/credentials');
        $op->(404, 'credentials, no account',
              POST => '/accounts/acct_none/credentials');

        $op->(200, 'inventory added', POST => '/inventory',
              {numbers => ['+14155550100', '+14155550101']});
        $op->(400, 'a bad number', POST => '/inventory',
              {numbers => ['+14155550100', '555']});
        $op->(200, 'inventory', GET => '/inventory');
        $op->(200, 'number removed', DELETE => '/inventory/%2B14155550100');
        $op->(404, 'number not there', DELETE => '/inventory/+14155550100');
        $op->(400, 'not a number', DELETE => '/inventory/555');
        $r->sadd('lg:{fleet}:inventory:quarantine', '+04155550100',
                 '+0415555');
        $op->(200, 'quarantine', GET => '/inventory/quarantine');
        $op->(200, 'released', POST => '/inventory/quarantine/release',
              {number => '+04155550100', as => '+14155550100'});
        $op->(404, 'not in the quarantine',
              POST => '/inventory/quarantine/release',
              {number => '+04155550100', as => '+14155550100'});
        $r->sadd('lg:{fleet}:inventory:quarantine', '+04155550100');
        $op->(409, 'in the inventory', POST => '/inventory/quarantine/release',
              {number => '+04155550100', as => '+14155550100'});
        $op->(400, 'no correction', POST => '/inventory/quarantine/release',
              {number => '+04155550100'});
        $op->(200, 'dropped', POST => '/inventory/quarantine/drop',
              {number => '+04155550100'});
        $op->(404, 'not there to drop', POST => '/inventory/quarantine/drop',
              {number => '+04155550100'});

        my $id = $line->('org_oa');
        $op->(400, 'phone required', POST => "/lines/$id/active", {});
        $op->(200, 'line active', POST => "/lines/$id/active",
              {phone => '+14155550123'});
        $op->(409, 'line already active', POST => "/lines/$id/failed",
              {reason => 'carrier'});
        my $id2 = $line->('org_oa', channelType => 'email',
                          email => 'ada@example.com');
        $op->(400, 'reason required', POST => "/lines/$id2/failed", {});
        $op->(200, 'line failed', POST => "/lines/$id2/failed",
              {reason => 'carrier refused'});
        $op->(404, 'no such line', POST => '/lines/' . ('0' x 24) . '/active');
        $op->(400, 'invalid line id', POST => '/lines/xyz/active');
        $op->(200, 'health', POST => "/lines/$id/health",
              {status => 'unhealthy'});
        $op->(400, 'bad health', POST => "/lines/$id/health",
              {status => 'sick'});
        $op->(200, 'usage', POST => "/lines/$id/usage",
              {newConversations => 1, totalMessages => 4});
        $op->(200, 'usage, no body', POST => "/lines/$id/usage");
        $op->(200, 'usage with a key', POST => "/lines/$id/usage",
              {totalMessages => 1}, 'Idempotency-Key' => 'oa-1');
        $op->(200, 'usage replayed', POST => "/lines/$id/usage",
              {totalMessages => 1}, 'Idempotency-Key' => 'oa-1');
        $op->(422, 'usage key reused', POST => "/lines/$id/usage",
              {totalMessages => 2}, 'Idempotency-Key' => 'oa-1');
        $op->(400, 'bad usage', POST => "/lines/$id/usage",
              {totalMessages => 1.5});

        $r->xadd('lg:provisioning', '*', workspace => 'org_oa', id => $id,
                 channelType => 'phone', lineType => 'purchased',
                 at => '2026-01-01T00:00:00.000Z');
        $b = $op->(200, 'provisioning stream',
                   GET => '/provisioning?count=10');
        $op->(200, 'provisioning stream, next page',
              GET => "/provisioning?after=$b->{entries}[-1]{id}");
        $op->(400, 'bad count', GET => '/provisioning?count=0');
        $op->(400, 'bad after', GET => '/provisioning?after=x');
        $op->(200, 'reconciliation stream', GET => '/reconciliation');

        my $tx = $ua->get($s->url('/_linegate/workspaces/org_oa'));
        is($tx->res->code, 401, 'no token: 401');
        answer_matches($tx, 'no token');
    };

    my $deliver = sub {
        my ($status, $name, $event, %o) = @_;
        my $body = ref $event ? encode_json($event) : $event;
        my $t = time;
        my $sig = 't=' . $t . ',v1='
                  . hmac_sha256_hex("$t.$body", $o{secret}
                                                // $s->webhook_secret);
        my $tx = $ua->post($s->url('/webhooks/stripe')
                           => {'Stripe-Signature' => $sig} => $body);
        is($tx->res->code, $status, "$name: $status")
            or diag($tx->res->body);
        answer_matches($tx, $name);
        return $tx->res->json // {};
    };
    my $event = sub {
        my ($type, $object, %o) = @_;
        return {id => $o{id} // 'evt_oa' . ++$n, object => 'event',
                type => $type, created => $o{created} // time,
                data => {object => $object}};
    };

    subtest 'webhook answers match' => sub {
        my $id = $line->('org_oa', provisioningStatus => 'awaiting_payment',
                         paymentStatus => 'unpaid', invoiceId => 'in_oa');
        $r->set('lg:{ws:org_oa}:pending', $id);
        $r->set('lg:invoice:in_oa', "org_oa:$id");

        my $paid = $event->('invoice.paid', {id => 'in_oa'});
        my $b = $deliver->(200, 'invoice.paid', $paid);
        ok($b->{received} && keys %$b == 1, 'applied: {"received": true}');
        ok($deliver->(200, 'redelivered', $paid)->{duplicate}, 'duplicate');
        ok($deliver->(200, 'unknown invoice',
                      $event->('invoice.voided', {id => 'in_none'}))
               ->{unknown}, 'unknown');
        my $sub = {id => 'sub_oa', status => 'past_due', customer => 'cus_oa',
                   metadata => {workspace_id => 'org_oa'},
                   items => {data => [{price => {id => 'price_plan_mini'}}]}};
        is($deliver->(409, 'subscription of a workspace without customer',
                      $event->('customer.subscription.updated', $sub))
               ->{code}, 'CUSTOMER_UNKNOWN', 'CUSTOMER_UNKNOWN');
        $r->hset('lg:{ws:org_oa}', stripeCustomerId => 'cus_oa');
        ok($deliver->(200, 'subscription of another customer',
                      $event->('customer.subscription.updated',
                               {%$sub, customer => 'cus_other'}))
               ->{refused}, 'refused');
        $deliver->(200, 'subscription',
                   $event->('customer.subscription.updated', $sub));
        ok($deliver->(200, 'older subscription event',
                      $event->('customer.subscription.updated', $sub,
                               created => time - 3600))->{stale}, 'stale');
        ok($deliver->(200, 'another event',
                      $event->('charge.succeeded', {id => 'ch_1'}))
               ->{ignored}, 'ignored');
        $deliver->(409, 'subscription of an unknown workspace',
                   $event->('customer.subscription.updated',
                            {%$sub, metadata => {workspace_id => 'org_no'}}));

        $deliver->(400, 'bad signature', $paid, secret => 'whsec_wrong');
        $deliver->(400, 'not JSON', '{x');
        $deliver->(400, 'not an event', '{"id":"evt_x"}');
        $deliver->(400, 'malformed subscription',
                   $event->('customer.subscription.updated',
                            {metadata => {workspace_id => 'org_oa'}}));

        my $tx = $ua->get($s->url('/webhooks/stripe'));
        is($tx->res->code, 405, 'GET: 405');
        answer_matches($tx, 'GET /webhooks/stripe', 'post');

        $s->stop_redis;
        $deliver->(503, 'Redis down',
                   $event->('invoice.paid', {id => 'in_oa'}));
        $op->(503, 'operator, Redis down', GET => '/workspaces/org_oa');
        $s->start_redis;
    };

    $s->stop;
}

done_testing;

__DATA__
---
$schema: https://json-schema.org/draft/2019-09/schema
description: |
  OpenAPI 3.1 documents, after https://spec.openapis.org/oas/3.1/schema
  (2022-10-07): each object's fixed fields and requirements, no other
  field but x- extensions.
type: object
required: [openapi, info, paths]
additionalProperties: false
patternProperties:
  '^x-': true
properties:
  openapi: {type: string, pattern: '^3\.1\.\d+(-.+)?$'}
  info: {$ref: '#/$defs/info'}
  jsonSchemaDialect: {type: string}
  servers: {type: array, items: {$ref: '#/$defs/server'}}
  paths: {$ref: '#/$defs/paths'}
  webhooks:
    type: object
    additionalProperties: {$ref: '#/$defs/path-item'}
  components: {$ref: '#/$defs/components'}
  security: {type: array, items: {$ref: '#/$defs/security-requirement'}}
  tags: {type: array, items: {$ref: '#/$defs/tag'}}
  externalDocs: {$ref: '#/$defs/external-documentation'}
$defs:
  info:
    type: object
    required: [title, version]
    additionalProperties: false
    patternProperties: {'^x-': true}
    properties:
      title: {type: string}
      summary: {type: string}
      description: {type: string}
      termsOfService: {type: string}
      contact:
        type: object
        additionalProperties: false
        patternProperties: {'^x-': true}
        properties:
          name: {type: string}
          url: {type: string}
          email: {type: string}
      license:
        type: object
        required: [name]
        additionalProperties: false
        patternProperties: {'^x-': true}
        properties:
          name: {type: string}
          identifier: {type: string}
          url: {type: string}
        not: {required: [identifier, url]}
      version: {type: string}
  server:
    type: object
    required: [url]
    additionalProperties: false
    patternProperties: {'^x-': true}
    properties:
      url: {type: string}
      description: {type: string}
      variables:
        type: object
        additionalProperties:
          type: object
          required: [default]
          additionalProperties: false
          patternProperties: {'^x-': true}
          properties:
            enum: {type: array, items: {type: string}, minItems: 1}
            default: {type: string}
            description: {type: string}
  tag:
    type: object
    required: [name]
    additionalProperties: false
    patternProperties: {'^x-': true}
    properties:
      name: {type: string}
      description: {type: string}
      externalDocs: {$ref: '#/$defs/external-documentation'}
  external-documentation:
    type: object
    required: [url]
    additionalProperties: false
    patternProperties: {'^x-': true}
    properties:
      description: {type: string}
      url: {type: string}
  reference:
    type: object
    required: [$ref]
    additionalProperties: false
    patternProperties:
      '^\$ref$': {type: string}
      '^(summary|description)$': {type: string}
  paths:
    type: object
    additionalProperties: false
    patternProperties:
      '^/': {$ref: '#/$defs/path-item'}
      '^x-': true
  path-item:
    type: object
    additionalProperties: false
    patternProperties:
      '^x-': true
      '^\$ref$': {type: string}
      '^(get|put|post|delete|options|head|patch|trace)$':
        $ref: '#/$defs/operation'
    properties:
      summary: {type: string}
      description: {type: string}
      servers: {type: array, items: {$ref: '#/$defs/server'}}
      parameters: {$ref: '#/$defs/parameters'}
  operation:
    type: object
    additionalProperties: false
    patternProperties: {'^x-': true}
    properties:
      tags: {type: array, items: {type: string}}
      summary: {type: string}
      description: {type: string}
      externalDocs: {$ref: '#/$defs/external-documentation'}
      operationId: {type: string}
      parameters: {$ref: '#/$defs/parameters'}
      requestBody: {$ref: '#/$defs/request-body-or-reference'}
      responses: {$ref: '#/$defs/responses'}
      callbacks:
        type: object
        additionalProperties:
          type: object
          additionalProperties: {$ref: '#/$defs/path-item'}
      deprecated: {type: boolean}
      security: {type: array, items: {$ref: '#/$defs/security-requirement'}}
      servers: {type: array, items: {$ref: '#/$defs/server'}}
  parameters:
    type: array
    items: {$ref: '#/$defs/parameter-or-reference'}
  parameter-or-reference:
    if: {type: object, required: [$ref]}
    then: {$ref: '#/$defs/reference'}
    else: {$ref: '#/$defs/parameter'}
  parameter:
    type: object
    required: [name, in]
    additionalProperties: false
    patternProperties: {'^x-': true}
    properties:
      name: {type: string}
      in: {enum: [query, header, path, cookie]}
      description: {type: string}
      required: {type: boolean}
      deprecated: {type: boolean}
      allowEmptyValue: {type: boolean}
      style: {type: string}
      explode: {type: boolean}
      allowReserved: {type: boolean}
      schema: {$ref: '#/$defs/schema'}
      content: {$ref: '#/$defs/content', minProperties: 1, maxProperties: 1}
      example: true
      examples: {$ref: '#/$defs/examples'}
    oneOf:
      - required: [schema]
      - required: [content]
    allOf:
      - if: {properties: {in: {const: path}}, required: [in]}
        then:
          required: [required]
          properties:
            required: {const: true}
            style: {enum: [matrix, label, simple]}
      - if: {properties: {in: {const: header}}, required: [in]}
        then: {properties: {style: {const: simple}}}
      - if: {properties: {in: {const: query}}, required: [in]}
        then:
          properties:
            style: {enum: [form, spaceDelimited, pipeDelimited, deepObject]}
      - if: {properties: {in: {const: cookie}}, required: [in]}
        then: {properties: {style: {const: form}}}
  request-body-or-reference:
    if: {type: object, required: [$ref]}
    then: {$ref: '#/$defs/reference'}
    else:
      type: object
      required: [content]
      additionalProperties: false
      patternProperties: {'^x-': true}
      properties:
        description: {type: string}
        content: {$ref: '#/$defs/content'}
        required: {type: boolean}
  content:
    type: object
    additionalProperties: {$ref: '#/$defs/media-type'}
  media-type:
    type: object
    additionalProperties: false
    patternProperties: {'^x-': true}
    properties:
      schema: {$ref: '#/$defs/schema'}
      example: true
      examples: {$ref: '#/$defs/examples'}
      encoding: {type: object}
  examples:
    type: object
    additionalProperties:
      if: {type: object, required: [$ref]}
      then: {$ref: '#/$defs/reference'}
      else:
        type: object
        additionalProperties: false
        patternProperties: {'^x-': true}
        properties:
          summary: {type: string}
          description: {type: string}
          value: true
          externalValue: {type: string}
        not: {required: [value, externalValue]}
  responses:
    type: object
    minProperties: 1
    additionalProperties: false
    patternProperties:
      '^[1-5](?:[0-9]{2}|XX)$': {$ref: '#/$defs/response-or-reference'}
      '^x-': true
    properties:
      default: {$ref: '#/$defs/response-or-reference'}
  response-or-reference:
    if: {type: object, required: [$ref]}
    then: {$ref: '#/$defs/reference'}
    else: {$ref: '#/$defs/response'}
  response:
    type: object
    required: [description]
    additionalProperties: false
    patternProperties: {'^x-': true}
    properties:
      description: {type: string}
      headers:
        type: object
        additionalProperties: {$ref: '#/$defs/header-or-reference'}
      content: {$ref: '#/$defs/content'}
      links: {type: object}
  header-or-reference:
    if: {type: object, required: [$ref]}
    then: {$ref: '#/$defs/reference'}
    else: {$ref: '#/$defs/header'}
  header:
    type: object
    additionalProperties: false
    patternProperties: {'^x-': true}
    properties:
      description: {type: string}
      required: {type: boolean}
      deprecated: {type: boolean}
      style: {const: simple}
      explode: {type: boolean}
      schema: {$ref: '#/$defs/schema'}
      content: {$ref: '#/$defs/content', minProperties: 1, maxProperties: 1}
      example: true
      examples: {$ref: '#/$defs/examples'}
    oneOf:
      - required: [schema]
      - required: [content]
  schema:
    type: [object, boolean]
  security-scheme-or-reference:
    if: {type: object, required: [$ref]}
    then: {$ref: '#/$defs/reference'}
    else: {$ref: '#/$defs/security-scheme'}
  security-scheme:
    type: object
    required: [type]
    additionalProperties: false
    patternProperties: {'^x-': true}
    properties:
      type: {enum: [apiKey, http, mutualTLS, oauth2, openIdConnect]}
      description: {type: string}
      name: {type: string}
      in: {enum: [query, header, cookie]}
      scheme: {type: string}
      bearerFormat: {type: string}
      flows: {type: object}
      openIdConnectUrl: {type: string}
    allOf:
      - if: {properties: {type: {const: apiKey}}, required: [type]}
        then: {required: [name, in]}
      - if: {properties: {type: {const: http}}, required: [type]}
        then: {required: [scheme]}
      - if: {properties: {type: {const: oauth2}}, required: [type]}
        then: {required: [flows]}
      - if: {properties: {type: {const: openIdConnect}}, required: [type]}
        then: {required: [openIdConnectUrl]}
  security-requirement:
    type: object
    additionalProperties: {type: array, items: {type: string}}
  components:
    type: object
    additionalProperties: false
    patternProperties: {'^x-': true}
    properties:
      schemas:
        type: object
        propertyNames: {pattern: '^[a-zA-Z0-9._-]+$'}
        additionalProperties: {$ref: '#/$defs/schema'}
      responses:
        type: object
        propertyNames: {pattern: '^[a-zA-Z0-9._-]+$'}
        additionalProperties: {$ref: '#/$defs/response-or-reference'}
      parameters:
        type: object
        propertyNames: {pattern: '^[a-zA-Z0-9._-]+$'}
        additionalProperties: {$ref: '#/$defs/parameter-or-reference'}
      examples: {$ref: '#/$defs/examples'}
      requestBodies:
        type: object
        propertyNames: {pattern: '^[a-zA-Z0-9._-]+$'}
        additionalProperties: {$ref: '#/$defs/request-body-or-reference'}
      headers:
        type: object
        propertyNames: {pattern: '^[a-zA-Z0-9._-]+$'}
        additionalProperties: {$ref: '#/$defs/header-or-reference'}
      securitySchemes:
        type: object
        propertyNames: {pattern: '^[a-zA-Z0-9._-]+$'}
        additionalProperties: {$ref: '#/$defs/security-scheme-or-reference'}
      links: {type: object}
      callbacks: {type: object}
      pathItems:
        type: object
        additionalProperties: {$ref: '#/$defs/path-item'}
