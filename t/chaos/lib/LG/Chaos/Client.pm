package LG::Chaos::Client;

# One chaos client: a forked process that runs a random mix of Lines and
# Provisioning API calls until its deadline and writes one JSON line per
# operation to its log: {t0, t1, ep (endpoint), st (status or "none"),
# p (problem with the answer, if any), ...}.
#
# Answers are judged as they come: a complete HTTP answer, JSON in the
# API's format, matching docs/openapi.yaml (which lists the documented
# statuses of every path). A connection closed without an answer is
# recorded with st "none" and judged later (it is excused only for the
# clients that aborted on purpose and for requests in flight when a worker
# was SIGKILLed).

use strict;
use warnings;

use IO::Socket::INET;
use LG::OpenAPI ();
use Mojo::IOLoop;
use Mojo::JSON qw(decode_json encode_json);
use Mojo::Promise;
use Mojo::UserAgent;
use Time::HiRes qw(sleep time);

my $CREATE  = '/api/line-requests';
my $PREVIEW = '/accounts/lines/provision-preview';
my $CONFIRM = '/accounts/lines/provision-confirm';

# $c: {n, seed, until, url, stub_url, op_token, log, workspaces => [...],
#      accounts => [...], aborts => 0|1}
sub new {
    my ($class, %c) = @_;
    my $self = bless {%c, known => [], tokens => []}, $class;
    # no keep-alive: a connection an old worker closes at a reload while
    # the client writes a new request on it is HTTP's race, not an answer
    # lost by linegate (each request here has its own connection)
    $self->{ua} = Mojo::UserAgent->new(
        connect_timeout => 10, inactivity_timeout => 30,
        request_timeout => 30, max_redirects => 0, max_connections => 0,
    );
    return $self;
}

sub run {
    my ($self) = @_;
    srand($self->{seed});
    open my $fh, '>', $self->{log} or die "$self->{log}: $!";
    $fh->autoflush(1);
    $self->{fh} = $fh;

    my @mix = (
        [create => 24], [poll => 18], [pay => 9], [cancel => 5],
        [payment_link => 5], [by_user => 8], [confirm_burst => 8],
        [confirm_single => 4], [limit_burst => 4], [limits => 3], [revoke => 2],
        ($self->{aborts} ? ([abort => 4]) : ()),
    );
    my $total = 0;
    $total += $_->[1] for @mix;

    while (time < $self->{until}) {
        my $r = rand $total;
        my $op;
        for (@mix) { $op = $_->[0]; last if ($r -= $_->[1]) < 0 }
        my $m = "op_$op";
        eval { $self->$m; 1 } or $self->record({ep => "client $op",
            st => 'none', p => "client error: $@"});
    }
    close $fh;
}

sub record {
    my ($self, $e) = @_;
    $e->{c} = $self->{n};
    print { $self->{fh} } encode_json($e), "\n";
}

sub pick { return $_[0][int rand @{ $_[0] }] }

# judge an answer; returns the decoded body (or undef)
sub judge {
    my ($self, $tx, $ep, $t0, %extra) = @_;
    my $res = $tx->res;
    my $keep = delete $extra{keep};
    my %e = (ep => $ep, t0 => $t0, t1 => time, %extra);
    my $body;

    if (!$res->code) {
        $e{st} = 'none';
        $e{p} = 'no answer: ' . ($tx->error // {})->{message};
    } else {
        $e{st} = $res->code;
        my $ct = $res->headers->content_type // '';
        $body = eval { decode_json($res->body) };
        if ($ct !~ m{^application/json}) {
            $e{p} = "Content-Type '$ct'";
        } elsif (ref $body ne 'HASH') {
            $e{p} = 'body not a JSON object: ' . substr($res->body, 0, 120);
        } elsif (my @err = LG::OpenAPI::invalid($tx)) {
            $e{p} = "openapi: $err[0]";
        }
        $e{p} .= ' body: ' . substr($res->body, 0, 300) if $e{p};
        $e{body} = $body if $keep && ref $body eq 'HASH';
    }
    $self->record(\%e);
    return $body;
}

sub req {
    my ($self, $method, $path, $headers, $body) = @_;
    my @content = defined $body ? (json => $body) : ();
    my $tx = $self->{ua}->build_tx($method => "$self->{url}$path"
                                   => $headers => @content);
    return $self->{ua}->start($tx);
}

sub auth { return {Authorization => "Bearer $_[0]{key}"} }

sub create_body {
    my %b = (firstName => 'Chaos', lastName => 'Client');
    my $r = rand;
    if ($r < 0.5) {
        $b{channelType} = 'phone';
    } elsif ($r < 0.6) {
        %b = (%b, channelType => 'phone', lineType => 'byon',
              phone => sprintf('+1650555%04d', int rand 10000),
              email => 'byon@example.com');
    } else {
        %b = (%b, channelType => 'email', email => 'chaos@example.com');
    }
    return \%b;
}

sub learn {
    my ($self, $w, $b) = @_;
    return unless ref $b eq 'HASH';
    my $id = ($b->{line} // {})->{_id} // $b->{pendingRequestId} // return;
    my ($k) = grep { $_->{id} eq $id } @{ $self->{known} };
    if (!$k) {
        $k = {w => $w, id => $id};
        push @{ $self->{known} }, $k;
        shift @{ $self->{known} } if @{ $self->{known} } > 60;
    }
    $k->{status} = $b->{status} if $b->{status} && $b->{line};
    $k->{invoice} = $b->{invoiceId} if $b->{invoiceId};
}

sub op_create {
    my ($self) = @_;
    my $w = pick($self->{workspaces});
    my $body = create_body();
    my %h = %{ auth($w) };
    $h{'Idempotency-Key'} = 'chaos-' . int(rand 1e9) if rand() < 0.3;
    my $n = rand() < 0.2 ? 2 + int rand 3 : 1;    # a burst sometimes

    my @tx = $self->parallel(map { [POST => $CREATE, \%h, $body] } 1 .. $n);
    for my $tx (@tx) {
        my $b = $self->judge($tx, 'POST /api/line-requests', $tx->{t0},
                             w => $w->{id});
        $self->learn($w, $b);
    }

    # the same key again: a replay, or 409 in use, never a second request
    if ($h{'Idempotency-Key'} && rand() < 0.5) {
        my $t0 = time;
        my $b = $self->judge($self->req(POST => $CREATE, \%h, $body),
                             'POST /api/line-requests (idem retry)', $t0,
                             w => $w->{id});
        $self->learn($w, $b);
    }
}

sub known {
    my ($self, $want) = @_;
    my @k = grep { !$want || ($_->{status} // '') eq $want }
            @{ $self->{known} };
    return @k ? pick(\@k) : undef;
}

sub op_poll {
    my ($self) = @_;
    my $k = $self->known // return $self->op_create;
    my $t0 = time;
    my $b = $self->judge($self->req(GET => "$CREATE/$k->{id}",
                                    auth($k->{w})),
                         'GET /api/line-requests/:id', $t0);
    $self->learn($k->{w}, $b);
}

sub op_pay {
    my ($self) = @_;
    my $k = $self->known('awaiting_payment') // return $self->op_poll;
    return $self->op_poll unless $k->{invoice};
    my $t0 = time;
    my $tx = $self->{ua}->post(
        "$self->{stub_url}/_stub/invoices/$k->{invoice}/pay"
        => json => {webhook_url => "$self->{url}/webhooks/stripe"});
    my $r = eval { $tx->res->json } // {};
    if (!$r->{delivered}) {
        # not open any more (paid, voided) or the stub refused: no webhook
        $self->record({ep => 'webhook invoice.paid', t0 => $t0, t1 => time,
            st => $tx->res->code == 409 ? 'not open' : 'none',
            ($tx->res->code == 409 ? ()
             : (p => 'no answer: webhook not delivered: ' . ($r->{error}
                    // $tx->res->body // '')))});
        $k->{status} = 'gone' if ($tx->res->code // 0) == 409;
        return;
    }
    my %e = (ep => 'webhook invoice.paid', t0 => $t0, t1 => time,
             st => $r->{status});
    $e{p} = "webhook answer: $r->{body}"
        unless ref $r->{json} eq 'HASH' || $r->{status} >= 500
               && ($r->{body} // '') =~ /^\{/;
    $self->record(\%e);
    $k->{status} = 'paid' if $r->{status} == 200;
}

sub op_manage {
    my ($self, $action) = @_;
    my $k = $self->known('awaiting_payment') // $self->known
        // return $self->op_create;
    my $t0 = time;
    my $b = $self->judge($self->req(POST => "$CREATE/$k->{id}",
                                    auth($k->{w}), {action => $action}),
                         "POST /api/line-requests/:id $action", $t0);
    $self->learn($k->{w}, $b);
    $k->{status} = $b->{status}
        if ref $b eq 'HASH' && $b->{status} && $action eq 'cancel';
}

sub op_cancel       { $_[0]->op_manage('cancel') }
sub op_payment_link { $_[0]->op_manage('payment_link') }

sub op_by_user {
    my ($self) = @_;
    my $w = pick($self->{workspaces});
    my $t0 = time;
    $self->judge($self->req(GET => '/api/lines/by-user', auth($w)),
                 'GET /api/lines/by-user', $t0);
}

sub sb { return {'sb-api-key-id' => $_[0]{key_id},
                 'sb-api-secret-key' => $_[0]{secret}} }

sub preview {
    my ($self, $a) = @_;
    my $t0 = time;
    my $b = $self->judge($self->req(POST => $PREVIEW, sb($a)),
                         "POST $PREVIEW", $t0);
    return ref $b eq 'HASH' ? $b->{preview_token} : undef;
}

# many confirms of one token at once: at most one may buy
sub op_confirm_burst {
    my ($self) = @_;
    my $a = pick($self->{accounts});
    my $token = $self->preview($a) // return;
    my $n = 2 + int rand 5;
    my @tx = $self->parallel(map {
        [POST => $CONFIRM, sb($a), {preview_token => $token}]
    } 1 .. $n);
    my $ok = 0;
    for my $tx (@tx) {
        my $b = $self->judge($tx, "POST $CONFIRM", $tx->{t0},
                             a => $a->{id}, keep => 1);
        $ok++ if ($tx->res->code // 0) == 200;
    }
    $self->record({ep => 'confirm burst', st => 'n/a', t0 => time,
                   t1 => time, p => "$ok confirms of one token bought"})
        if $ok > 1;
}

# several tokens of one account, confirmed at once: past the daily limit
# the extra ones must get 429, however they interleave
sub op_limit_burst {
    my ($self) = @_;
    my $a = pick($self->{accounts});
    my @tokens = grep { defined } map { $self->preview($a) } 1 .. 2 + int rand 4;
    return unless @tokens;
    my @tx = $self->parallel(map {
        [POST => $CONFIRM, sb($a), {preview_token => $_}]
    } @tokens);
    $self->judge($_, "POST $CONFIRM", $_->{t0}, a => $a->{id}, keep => 1)
        for @tx;
}

sub op_confirm_single {
    my ($self) = @_;
    my $a = pick($self->{accounts});
    my $token = $self->preview($a) // return;
    my $t0 = time;
    $self->judge($self->req(POST => $CONFIRM, sb($a),
                            {preview_token => $token}),
                 "POST $CONFIRM", $t0, a => $a->{id}, keep => 1);
}

sub op_limits {
    my ($self) = @_;
    my $a = pick($self->{accounts});
    my $t0 = time;
    $self->judge($self->req(GET => '/accounts/limits', sb($a)),
                 'GET /accounts/limits', $t0);
}

# a spare key of a workspace: issued, used, revoked, then refused
sub op_revoke {
    my ($self) = @_;
    my $w = pick($self->{workspaces});
    my $op = {Authorization => "Bearer $self->{op_token}"};
    my $t0 = time;
    my $tx = $self->req(POST => "/_linegate/workspaces/$w->{id}/keys", $op);
    my $k = eval { $tx->res->json } // {};
    $self->record({ep => 'operator key issue', t0 => $t0, t1 => time,
                   st => $tx->res->code // 'none',
                   ($tx->res->code ? () : (p => 'no answer'))});
    return unless $k->{key};

    my $use = {Authorization => "Bearer $k->{key}"};
    $t0 = time;
    $self->judge($self->req(GET => '/api/lines/by-user', $use),
                 'GET /api/lines/by-user', $t0);

    $t0 = time;
    $tx = $self->req(DELETE =>
                     "/_linegate/workspaces/$w->{id}/keys/$k->{keyId}", $op);
    $self->record({ep => 'operator key revoke', t0 => $t0, t1 => time,
                   st => $tx->res->code // 'none',
                   ($tx->res->code ? () : (p => 'no answer'))});
    return unless ($tx->res->code // 0) == 200;

    sleep 1.1;    # SPEC 2.1: refused fleet-wide within one second
    $t0 = time;
    $tx = $self->req(GET => '/api/lines/by-user', $use);
    $self->judge($tx, 'GET by-user (revoked key)', $t0);
    my $st = $tx->res->code // 0;
    $self->record({ep => 'revoked key used', t0 => $t0, t1 => time,
                   st => $st, p => "a revoked key answered $st"})
        if $st == 200;
}

# a client that sends a request and closes its socket at once (or after a
# few milliseconds): a create, a confirm or a poll
sub op_abort {
    my ($self) = @_;
    my ($path, $h, $body, $method);
    my $r = rand;
    if ($r < 0.45) {
        my $w = pick($self->{workspaces});
        ($method, $path, $body) = (POST => $CREATE, encode_json(create_body()));
        $h = auth($w);
    } elsif ($r < 0.9) {
        my $a = pick($self->{accounts});
        my $token = $self->preview($a) // return;
        ($method, $path, $body)
            = (POST => $CONFIRM, encode_json({preview_token => $token}));
        $h = sb($a);
    } else {
        my $k = $self->known('awaiting_payment') // return;
        ($method, $path, $body) = (POST => "$CREATE/$k->{id}",
                                   encode_json({action => 'cancel'}));
        $h = auth($k->{w});
    }
    my ($port) = $self->{url} =~ /:(\d+)$/;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                  PeerPort => $port) or return;
    my $hdr = join '', map { "$_: $h->{$_}\r\n" } keys %$h;
    print $s "$method $path HTTP/1.1\r\nHost: chaos\r\n$hdr"
        . "Content-Type: application/json\r\n"
        . 'Content-Length: ' . length($body) . "\r\n\r\n$body";
    sleep rand(0.3) if rand() < 0.5;
    close $s;
    $self->record({ep => "aborted $method "
                   . ($path =~ m{^$CREATE/} ? "$CREATE/:id" : $path),
                   st => 'aborted', t0 => time, t1 => time});
}

# requests at once, each [method, path, headers, body]; each transaction
# carries its start time in {t0}
sub parallel {
    my ($self, @reqs) = @_;
    my $ua = Mojo::UserAgent->new(connect_timeout => 10,
        inactivity_timeout => 30, request_timeout => 30,
        max_connections => 0);
    my @tx = map {
        my ($m, $p, $h, $b) = @$_;
        my $tx = $ua->build_tx($m => "$self->{url}$p" => $h
                               => (defined $b ? (json => $b) : ()));
        $tx->{t0} = time;
        $tx;
    } @reqs;
    Mojo::Promise->all(map { $ua->start_p($_)->catch(sub {}) } @tx)->wait;
    return @tx;
}

1;
