package LG::Chaos;

# The chaos harness (issue 13): a bounded workload with real concurrency
# against real nginx (2 workers), Redis and the Stripe stub, faults
# injected on a schedule, then a settle period and a check of invariants
# from the APIs, the stub's /_stub/state and Redis.
#
#   my $c = LG::Chaos->new(seconds => 180, seed => 42, clients => 8,
#                          faults => [qw(stripe_5xx redis_pause ...)]);
#   my $r = $c->run;          # {violations => N, report => "...", ...}
#
# t/chaos/chaos.pl (make chaos) and t/900-chaos-short.t drive it;
# docs/chaos.md describes the workload, the faults and the invariants.

use strict;
use warnings;

use LG::Chaos::Client;
use LG::Chaos::Faults;
use LG::Lines;
use LG::Provision;
use LG::Stack;
use Mojo::JSON qw(decode_json encode_json);
use POSIX ();
use Time::Local ();
use Time::HiRes qw(sleep time);

# included lines per plan and channel (SPEC 2.2)
my %INCLUDED = (
    mini    => {phone => 0, email => 1},
    starter => {phone => 1, email => 0},
    growth  => {phone => 2, email => 0},
);

our @INVARIANTS = qw(answers_complete answers_format confirm_answers_true
    one_awaiting_per_workspace awaiting_has_invoice pending_marker
    no_stuck_idempotency included_within_plan open_invoice_awaits
    paid_invoice_promoted no_draft_invoice paid_line_paid
    subscription_backed numbers_conserved no_stuck_reservation
    no_stale_claim limits_respected revoked_key_refused provisioning_on_stream
    reconcile_settled undone_refunded no_worker_crash no_alert_in_log);

sub new {
    my ($class, %o) = @_;
    my $self = bless {
        seconds => $o{seconds} // 180,
        seed    => $o{seed} // int(time) % 100000,
        clients => $o{clients} // 8,
        faults  => $o{faults} // [@LG::Chaos::Faults::KINDS],
        settle  => $o{settle} // 10,
        # seconds between two faults (LG::Chaos::Faults)
        gap     => $o{gap} // [1.5, 4],
        stripe_timeout_ms => 1000,
        log     => $o{log} // sub { print STDERR "chaos: @_\n" },
    }, $class;
    my %known = map { $_ => 1 } @LG::Chaos::Faults::KINDS;
    for (@{ $self->{faults} }) {
        die "unknown fault kind '$_' (known: @LG::Chaos::Faults::KINDS)\n"
            unless $known{$_};
    }
    return $self;
}

sub say { my $s = shift; $s->{log}->(@_) }

sub run {
    my ($self) = @_;
    $self->setup;
    $self->workload;
    $self->settle;
    return $self->check;
}

sub stack { $_[0]{s} }

sub setup {
    my ($self) = @_;
    srand($self->{seed});

    my $s = $self->{s} = LG::Stack->new(
        WORKERS => 2, STRIPE_TIMEOUT => "$self->{stripe_timeout_ms}ms",
        # the workspace rate's leases and their idle SET ... NX decided
        # under the faults too, as a fleet tuned for Redis CPU runs
        WS_RATE => '100000r/m lease=100ms',
        # the settle period's reconciliation runs take what waited 5 s,
        # and the confirms of killed workers once 5 s old (no confirm
        # lasts that long: 1 s Stripe timeouts)
        HTTP_EXTRA => 'linegate_reconcile_delay 5s; '
            . 'linegate_reconcile_lost_after 5s;',
        LOG_LEVEL => 'info')->start;
    $s->ua->max_connections(0);
    $self->{dir} = $s->dir . '/chaos';
    mkdir $self->{dir};
    chmod 0755, $self->{dir};

    my $l = LG::Lines->new($s);
    my @ws;
    for my $plan (qw(mini starter growth)) {
        for my $i (1 .. 3) {
            my $w = $l->workspace("org_chaos_${plan}_$i", plan => $plan);
            $w->{plan} = $plan;
            push @ws, $w;
        }
    }
    $self->{workspaces} = \@ws;

    my $p = LG::Provision->new($s);
    my @acct = (
        [daily => 3, monthly => 10], [daily => 3, monthly => 10],
        [daily => 5, monthly => 8], [daily => 8, monthly => 20],
        [daily => 100, monthly => 200], [daily => 100, monthly => 200],
        [daily => 2, monthly => 10],
        [daily => 5, monthly => 10, decline => 1],
        [daily => 5, monthly => 10, card => 0],
    );
    my $n = 0;
    $self->{accounts} = [map {
        my %o = @$_;
        my $a = $p->account('acct_chaos_' . $n++, %o);
        $a->{daily} = $o{daily};
        $a->{monthly} = $o{monthly};
        $a;
    } @acct];

    my @numbers = $p->numbers(300, 415777);
    $p->inventory(@numbers);
    $self->{seeded} = {map { $_ => 1 } @numbers};
    # faults the stub may not know yet (oversize, cut): probed, skipped
    my @skip;
    for my $probe ([stripe_oversize => oversize => 100],
                   [stripe_cut => cut => 1])
    {
        my ($kind, $field, $val) = @$probe;
        next unless grep { $_ eq $kind } @{ $self->{faults} };
        my $tx = $s->stub(POST => '/_stub/faults', {path_prefix =>
            '/v1/__probe', count => 1, status => 500, $field => $val});
        my $f = eval { $tx->res->json->{fault} } // {};
        next if exists $f->{$field};
        push @skip, $kind;
    }
    $s->stub(DELETE => '/_stub/faults');
    if (@skip) {
        my %skip = map { $_ => 1 } @skip;
        $self->{faults} = [grep { !$skip{$_} } @{ $self->{faults} }];
        $self->{skipped} = join(', ', @skip)
            . ' (t/stub/stripe-stub.pl does not know the fault yet)';
        $self->say("skipped: $self->{skipped}");
    }

    $self->{log_offset} = length $s->error_log;
    $self->say(sprintf 'stack up (nginx :%d, redis :%d, stub :%d), seed %d,'
        . ' %d s, %d clients, faults: %s', $s->port, $s->redis_port,
        $s->stub_port, $self->{seed}, $self->{seconds}, $self->{clients},
        join(',', @{ $self->{faults} }) || 'none');
}

sub spawn {
    my ($self, $code) = @_;
    my $pid = fork // die "fork: $!";
    if (!$pid) {
        $SIG{$_} = 'DEFAULT' for qw(INT TERM HUP);
        my $ok = eval { $code->(); 1 };
        print STDERR "chaos child $$: $@" unless $ok;
        POSIX::_exit($ok ? 0 : 1);
    }
    return $pid;
}

sub workload {
    my ($self) = @_;
    my $s = $self->{s};
    my $until = time + $self->{seconds};
    my %f = map { $_ => 1 } @{ $self->{faults} };
    my @pids;

    for my $n (1 .. $self->{clients}) {
        push @pids, $self->spawn(sub {
            LG::Chaos::Client->new(
                n => $n, seed => $self->{seed} * 1000 + $n, until => $until,
                url => $s->url(''), stub_url => $s->stub_url,
                op_token => $s->operator_token,
                log => "$self->{dir}/client-$n.jsonl",
                workspaces => $self->{workspaces},
                accounts => $self->{accounts},
                aborts => $f{client_abort} ? 1 : 0,
            )->run;
        });
    }
    push @pids, $self->spawn(sub {
        LG::Chaos::Faults->new(
            seed => $self->{seed}, until => $until,
            stub_url => $s->stub_url, redis_port => $s->redis_port,
            nginx_pid_file => $s->prefix . '/nginx.pid',
            log => "$self->{dir}/faults.jsonl",
            kinds => $self->{faults},
            stripe_timeout_ms => $self->{stripe_timeout_ms},
            gap => $self->{gap},
        )->run;
    });
    $self->{child_pids} = [@pids];

    for my $pid (@pids) {
        waitpid $pid, 0;
        $self->say("child $pid exited with $?") if $?;
    }
    $self->say('workload done');
}

sub jsonl {
    my ($file) = @_;
    open my $fh, '<', $file or return ();
    return map { decode_json($_) } grep { /\S/ } <$fh>;
}

sub ws_ids { return map { $_->{id} } @{ $_[0]{workspaces} } }

# the line requests of a workspace from Redis, by id
sub requests {
    my ($self, $w) = @_;
    my $r = $self->{s}->redis;
    my %lr;
    for my $k ($r->keys("lg:{ws:$w}:lr:*")) {
        (my $id = $k) =~ s/.*:lr://;
        $lr{$id} = {$r->hgetall($k)};
    }
    return \%lr;
}

# Faults off, then time for durable retries, and reads that reconcile:
# every request still awaiting payment is read (twice, a reconcile
# interval apart), which asks Stripe about its invoice.
sub settle {
    my ($self) = @_;
    my $s = $self->{s};
    $s->stub(DELETE => '/_stub/faults');
    eval { $s->redis->client_unpause };
    delete $s->{redis};
    my $third = $self->{settle} / 3;
    sleep $third;

    my @settle;
    for my $round (1, 2) {
        for my $w (@{ $self->{workspaces} }) {
            my $lr = $self->requests($w->{id});
            for my $id (sort keys %$lr) {
                next unless ($lr->{$id}{provisioningStatus} // '')
                            eq 'awaiting_payment';
                my $t0 = time;
                my $tx = $s->ua->start($s->ua->build_tx(
                    GET => $s->url("/api/line-requests/$id") => $w->{auth}));
                push @settle, {ep => 'settle GET /api/line-requests/:id',
                    st => $tx->res->code // 'none', t0 => $t0, t1 => time,
                    ($tx->res->code ? () : (p => 'no answer'))};
            }
        }
        sleep $third;
    }
    # then what waits on lg:{fleet}:reconcile is settled, as an operator's (or
    # linegate_reconcile_auto's) runs would: until nothing more waits
    for my $run (1 .. 10) {
        my $t0 = time;
        # the claims a run sweeps are the ones older than this, less
        # linegate_reconcile_lost_after (no_stale_claim)
        $self->{last_run} = $t0;
        my $tx = $s->op(POST => '/reconciliation/run');
        my $b = $tx->res->json // {};
        push @settle, {ep => 'settle POST /_linegate/reconciliation/run',
            st => $tx->res->code // 'none', t0 => $t0, t1 => time,
            ($tx->res->code ? () : (p => 'no answer')),
            (($tx->res->code // 0) =~ /^(200|409)$/ ? ()
                : (p => 'answered ' . ($tx->res->body // '')))};
        $self->{reconciled_runs}++;
        last if ($tx->res->code // 0) == 200 && !$b->{more}
             && !grep { $_->{outcome} eq 'deferred' } @{ $b->{entries} };
        sleep 1;
    }
    $self->{settle_ops} = \@settle;
    $self->say('settled');
}

sub check {
    my ($self) = @_;
    my $s = $self->{s};
    my $r = $s->redis;
    my %v = map { $_ => [] } @INVARIANTS;
    delete @$self{qw(slog elog)};
    $self->{v} = \%v;
    my $bad = sub { my $k = shift; push @{ $v{$k} }, join ' ', @_ };

    my @ops = map { jsonl($_) } glob "$self->{dir}/client-*.jsonl";
    push @ops, @{ $self->{settle_ops} // [] };
    my @faults = jsonl("$self->{dir}/faults.jsonl");
    $self->{ops} = \@ops;
    $self->{fault_log} = \@faults;
    my @kills = grep { $_->{kind} eq 'worker_kill' } @faults;
    my @reloads = map { $_->{t} } grep { $_->{kind} =~ /reload/ } @faults;

    # answers
    for my $o (@ops) {
        next unless $o->{p};
        if ($o->{st} eq 'none') {
            # in flight while a worker was being killed (the fault's
            # interval: from before the worker was chosen to the kill)
            my $excused = grep { $_->{t} <= $o->{t1} + 0.2
                                 && $_->{t_end} >= $o->{t0} - 0.2 } @kills;
            next if $excused && $o->{p} =~ /^no answer/;
            # the stub delivers webhooks on keep-alive connections: one
            # that an old worker closes as it shuts down (reload) while
            # the stub writes on it is HTTP's race, not an unanswered
            # request
            next if $o->{ep} =~ /^webhook/ && $o->{p} =~ /Premature/
                && grep { $_ >= $o->{t0} - 2 && $_ <= $o->{t1} } @reloads;
            $bad->(answers_complete => "$o->{ep}: $o->{p}");
        } else {
            my $k = $o->{ep} eq 'confirm burst' ? 'confirm_answers_true'
                  : $o->{ep} eq 'revoked key used' ? 'revoked_key_refused'
                  : 'answers_format';
            $bad->($k => "$o->{ep} -> $o->{st}: $o->{p}");
        }
    }

    # Lines API state
    my @stream = map { +{ @{ $_->[1] } } }
                 $r->xrange('lg:provisioning', '-', '+');
    my %on_stream = map { ($_->{id} // '') => 1 } @stream;
    my %lr_all;
    for my $w (@{ $self->{workspaces} }) {
        my $W = $w->{id};
        my $lr = $self->requests($W);
        $lr_all{$_} = {%{ $lr->{$_} }, _ws => $W} for keys %$lr;
        my @await = grep { $lr->{$_}{provisioningStatus} eq 'awaiting_payment' }
                    sort keys %$lr;
        $bad->(one_awaiting_per_workspace =>
               "$W: " . @await . " awaiting_payment (@await)") if @await > 1;
        for my $id (@await) {
            $bad->(awaiting_has_invoice => "$W: $id awaiting_payment without"
                   . " an invoice (created $lr->{$id}{createdAt})"
                   . $self->trail($id))
                unless length($lr->{$id}{invoiceId} // '');
        }
        my $pending = $r->get("lg:{ws:$W}:pending");
        if (defined $pending) {
            $bad->(pending_marker => "$W: pending -> $pending, which is "
                   . ($lr->{$pending} ? $lr->{$pending}{provisioningStatus}
                                      : 'missing'))
                unless $lr->{$pending} && $lr->{$pending}{provisioningStatus}
                       eq 'awaiting_payment';
        }
        for my $id (@await) {
            $bad->(pending_marker => "$W: $id awaiting_payment but pending"
                   . ' -> ' . ($pending // 'none'))
                unless defined $pending && $pending eq $id;
        }
        for my $k ($r->keys("lg:{ws:$W}:idem:*")) {
            my %h = $r->hgetall($k);
            $bad->(no_stuck_idempotency => "$W: $k still $h{state}"
                   . ' (ttl ' . $r->ttl($k) . ' s)')
                if ($h{state} // '') eq 'running';
        }
        my %inc;
        for my $id (sort keys %$lr) {
            my $q = $lr->{$id};
            my $st = $q->{provisioningStatus} // '';
            if ($st eq 'provisioning' || $st eq 'active') {
                $inc{ $q->{channelType} }++
                    if ($q->{paymentStatus} // '') eq 'not_required';
            }
            $bad->(provisioning_on_stream =>
                   "$W: $id provisioning, not on lg:provisioning")
                if $st eq 'provisioning' && !$on_stream{$id};
        }
        for my $ch (qw(phone email)) {
            my $cap = $INCLUDED{ $w->{plan} }{$ch};
            $bad->(included_within_plan => "$W ($w->{plan}): "
                   . ($inc{$ch} // 0) . " included $ch lines, plan allows"
                   . " $cap") if ($inc{$ch} // 0) > $cap;
        }
    }

    # the stub: invoices of line requests, subscriptions
    my $st = $s->stub(GET => '/_stub/state')->res->json;
    my %inv = %{ $st->{invoices} // {} };
    # the Stripe calls about a request or an invoice, for the examples
    my @slog = @{ $st->{log} // [] };
    my $trail = sub {
        my ($id, $in) = @_;
        my @e = grep {
            ($_->{idempotency_key} // '') =~ /\Q$id\E/
            || defined $in && index($_->{path}, $in) >= 0
        } @slog;
        return '' unless @e;
        return '; stripe: ' . join ', ', map {
            "$_->{method} $_->{path} -> "
            . ($_->{dropped} ? 'dropped' : $_->{status} // '?')
            . ($_->{cut} ? ' cut' : '')
            . ($_->{fault} ? ' (fault)' : '')
        } @e;
    };
    for my $in (sort keys %inv) {
        my $i = $inv{$in};
        my $id = ($i->{metadata} // {})->{line_request_id} // next;
        my $q = $lr_all{$id};
        my $qs = $q ? "$q->{provisioningStatus}/$q->{paymentStatus}"
                      . " invoiceId " . ($q->{invoiceId} // 'none')
                    : 'no such request';
        if ($i->{status} eq 'open') {
            $bad->(open_invoice_awaits => "$in open, request $id: $qs"
                   . $trail->($id, $in))
                unless $q && $q->{provisioningStatus} eq 'awaiting_payment'
                       && ($q->{invoiceId} // '') eq $in;
        } elsif ($i->{status} eq 'paid') {
            $bad->(paid_invoice_promoted => "$in paid, request $id: $qs")
                unless $q && $q->{provisioningStatus} =~ /^(?:provisioning|active)$/;
        } elsif ($i->{status} eq 'draft') {
            $bad->(no_draft_invoice => "$in draft, request $id: $qs"
                   . $trail->($id, $in));
        }
    }
    for my $id (sort keys %lr_all) {
        my $q = $lr_all{$id};
        next unless ($q->{paymentStatus} // '') eq 'paid';
        my $i = $inv{ $q->{invoiceId} // '' };
        $bad->(paid_line_paid => "$q->{_ws}: $id paid, its invoice "
               . ($q->{invoiceId} // 'none') . ' is '
               . ($i ? $i->{status} : 'unknown at Stripe'))
            unless $i && $i->{status} eq 'paid';
    }

    # Provisioning API state
    my @rec = map { +{ @{ $_->[1] } } } $r->xrange('lg:{fleet}:reconcile', '-', '+');
    my (%rec_worker, %rec_sub);
    for (@rec) {
        $rec_worker{ $_->{worker_id} // '' } = $_;
        $rec_sub{ $_->{subscription_id} } = $_ if length($_->{subscription_id} // '');
    }
    my @settled = map { +{ @{ $_->[1] } } }
                  $r->xrange('lg:{fleet}:reconciled', '-', '+');
    my %settled_sub = map { ($_->{subscription_id} => $_) }
                      grep { length($_->{subscription_id} // '') } @settled;
    # where each number is: the inventory, a claim of a purchase in flight
    # ("<A> <worker> <number>" on lg:{fleet}:pv:inflight), an account's
    # line, or an entry of lg:{fleet}:reconcile holding it for the run (a
    # purchase still reserved: record_failed, worker_lost); a reservation
    # holds none, nor does an intent ("<A> <worker> -", a purchase not yet
    # claimed)
    my (%line, %resv, %where);
    my %claim = $r->zrange('lg:{fleet}:pv:inflight', 0, -1, 'WITHSCORES');
    for my $m (sort keys %claim) {
        my ($A, $wid, $n) = split / /, $m;
        next if ($n // '') eq '-';
        # the claim of a line recorded (its settle still to come) is
        # the line's: one place
        next if defined $wid && ($r->hget("lg:{acct:$A}:line:$wid",
                                          'phone_number') // '') eq ($n // '');
        push @{ $where{ $n // '?' } }, 'claim ' . ($A // '?') . '/'
            . ($wid // '?');
    }
    for my $e (@rec) {
        next unless length($e->{phone_number} // '') && ($e->{reason} // '')
            =~ /^(?:record_failed|worker_lost)$/;
        push @{ $where{ $e->{phone_number} } },
            "reconcile entry $e->{account}/$e->{worker_id} ($e->{reason})";
    }
    for my $a (@{ $self->{accounts} }) {
        my $A = $a->{id};
        for my $k ($r->keys("lg:{acct:$A}:line:*")) {
            (my $wid = $k) =~ s/.*:line://;
            $line{$wid} = {$r->hgetall($k), account => $A};
            push @{ $where{ $line{$wid}{phone_number} } }, "line $A/$wid";
        }
        my $nres = 0;
        for my $k ($r->keys("lg:{acct:$A}:resv:*")) {
            (my $wid = $k) =~ s/.*:resv://;
            $resv{$wid} = {$r->hgetall($k), account => $A};
            if (((($rec_worker{$wid} // {})->{reason}) // '') ne 'record_failed') {
                $bad->(no_stuck_reservation => "$A/$wid is reserved"
                       . ' with no record_failed entry on lg:{fleet}:reconcile'
                       . $self->logtrail($wid)
                       . $self->around($A, $resv{$wid}{createdAt}));
            }
            $nres++;
        }
        my $nline = grep { $_->{account} eq $A } values %line;
        my $counted = $r->zcard("lg:{acct:$A}:prov");
        my $ok200 = grep { ($_->{a} // '') eq $A && $_->{st} eq '200' } @ops;
        $bad->(limits_respected => "$A: $nline lines + $nres held,"
               . " $counted counted, $ok200 confirms answered 200;"
               . " daily limit $a->{daily}")
            if $nline + $nres > $a->{daily} || $counted > $a->{daily}
               || $ok200 > $a->{daily};
    }
    push @{ $where{$_} }, 'inventory' for $r->smembers('lg:{fleet}:inventory');
    for my $n (sort keys %{ $self->{seeded} }) {
        my $at = delete $where{$n} // [];
        $bad->(numbers_conserved => "$n lost (not in the inventory, no"
               . ' claim, no line, no reconcile entry)') unless @$at;
        $bad->(numbers_conserved => "$n in " . @$at . ' places: '
               . join(', ', @$at)) if @$at > 1;
        # lg:{fleet}:held: every number handed out, none in the inventory
        # (an inventory load leaves its numbers out)
        my $held = $r->sismember('lg:{fleet}:held', $n);
        my $stocked = grep { $_ eq 'inventory' } @$at;
        $bad->(numbers_conserved => "$n in the inventory and held")
            if $stocked && $held;
        $bad->(numbers_conserved => "$n handed out (@$at), not held")
            if @$at && !$stocked && !$held;
    }
    $bad->(numbers_conserved => "$_ was never seeded: @{ $where{$_} }")
        for sort keys %where;

    # what the settle period's runs swept: no claim older than the last
    # run's cutoff (its start less linegate_reconcile_lost_after, 5 s)
    # is left, each a number held for a purchase nobody settles
    my $cutoff = (($self->{last_run} // time) - 5) * 1000;
    for my $m (sort keys %claim) {
        next unless $claim{$m} < $cutoff;
        my ($A, $wid) = split / /, $m;
        $bad->(no_stale_claim => "\"$m\" claimed "
               . sprintf('%.1f', ($cutoff - $claim{$m}) / 1000)
               . ' s before the last run\'s cutoff'
               . $self->logtrail($wid // $m));
    }

    for my $sub (sort keys %{ $st->{subscriptions} // {} }) {
        my $x = $st->{subscriptions}{$sub};
        next if ($x->{status} // '') eq 'canceled';
        my $wid = ($x->{metadata} // {})->{worker_id} // '';
        my $ln = $line{$wid};
        next if $ln && ($ln->{subscription_id} // '') eq $sub;
        next if $rec_sub{$sub} || $rec_worker{$wid};
        $bad->(subscription_backed => "$sub ($wid, "
               . (($x->{metadata} // {})->{phone_number} // '?')
               . ') backs no line and no lg:{fleet}:reconcile entry'
               . $self->logtrail($sub) . $self->logtrail($wid));
    }

    for my $o (grep { $_->{ep} =~ /provision-confirm$/ && $_->{body} } @ops) {
        my $b = $o->{body};
        if ($o->{st} eq '200') {
            my $ln = $line{ $b->{worker_id} // '' };
            $bad->(confirm_answers_true => "200 for $b->{worker_id}"
                   . " ($b->{phone_number}, $b->{subscription_id}) but "
                   . ($ln ? "the line says $ln->{phone_number}"
                          . " $ln->{subscription_id}" : 'no line recorded'))
                unless $ln && $ln->{phone_number} eq $b->{phone_number}
                       && $ln->{subscription_id} eq $b->{subscription_id};
        } elsif ($o->{st} eq '500') {
            my $sid = $b->{subscription_id} // '';
            $bad->(confirm_answers_true => "500 provisioning_failed for"
                   . " $sid, queued for reconciliation: not on lg:{fleet}:reconcile"
                   . ' and no line')
                unless $rec_sub{$sid} || $settled_sub{$sid}
                       || grep { ($_->{subscription_id} // '') eq $sid }
                          values %line;
        }
    }

    # reconciliation: nothing waits once the runs are over, and each
    # settled entry says what Stripe and Redis now show
    $bad->(reconcile_settled => "$_->{worker_id} ($_->{reason}) still on"
           . ' lg:{fleet}:reconcile' . $self->logtrail($_->{worker_id})) for @rec;
    my %sub_of_worker = map {
        ((($st->{subscriptions}{$_}{metadata} // {})->{worker_id} // '')
         => $st->{subscriptions}{$_})
    } keys %{ $st->{subscriptions} // {} };
    for my $e (grep { length($_->{line_request_id} // '') } @settled) {
        # a Lines API add-on whose worker died: nothing payable is left
        my $inv = $st->{invoices}{ $e->{invoice_id} // '' };
        my $status = $inv ? $inv->{status} : 'absent';
        my @payable = grep {
            ($_->{metadata}{line_request_id} // '') eq $e->{line_request_id}
                && $_->{status} =~ /^(draft|open)$/
        } values %{ $st->{invoices} // {} };
        my $ok = !@payable
            && ($e->{outcome} eq 'deleted' ? $status eq 'absent'
              : $e->{outcome} eq 'voided'  ? $status eq 'void'
              : $e->{outcome} eq 'settled' ? $status eq 'paid'
              : $e->{outcome} =~ /^(no_invoice|already_void)$/);
        $bad->(reconcile_settled => "line request $e->{line_request_id}"
               . " settled as $e->{outcome} but its invoice is $status, "
               . scalar(@payable) . ' payable') unless $ok;
    }
    for my $e (grep { !length($_->{line_request_id} // '') } @settled) {
        my $x = $sub_of_worker{ $e->{worker_id} };
        my $status = $x ? $x->{status} // '' : 'absent';
        my $ln = $line{ $e->{worker_id} };
        my $ok = $e->{outcome} eq 'recorded'
                     ? $ln && $x && $ln->{subscription_id} eq $x->{id}
               : $e->{outcome} =~ /^(canceled|already_canceled)$/
                     ? $status eq 'canceled' && !$ln
               : $e->{outcome} eq 'no_subscription'
                     ? $status eq 'absent' && !$ln
               : $e->{outcome} eq 'released'
                     ? $status ne 'active' && !$ln
               : 0;
        $bad->(reconcile_settled => "$e->{worker_id} settled as"
               . " $e->{outcome} but Stripe says $status and the line is "
               . ($ln ? 'recorded' : 'absent')) unless $ok;

        # a purchase undone (its subscription cancelled, no line) paid
        # nothing in the end: every invoice it paid was refunded
        next unless $x && $status eq 'canceled' && !$ln
                    && $e->{outcome} =~ /^(canceled|already_canceled|released)$/;
        for my $inv (grep { ($_->{subscription} // '') eq $x->{id} }
                     values %{ $st->{invoices} }) {
            my $kept = ($inv->{status} // '') eq 'paid'
                ? ($inv->{amount_paid} // 0) - ($inv->{amount_refunded} // 0)
                : 0;
            $bad->(undone_refunded => "$e->{worker_id} settled as"
                   . " $e->{outcome} (refund "
                   . ($e->{refund} // 'none named')
                   . "): its invoice $inv->{id} keeps $kept paid")
                if $kept > 0;
        }
        $bad->(undone_refunded => "$e->{worker_id} settled as"
               . " $e->{outcome}: no refund named")
            unless defined $e->{refund};
    }

    # the error log: worker crashes other than the SIGKILLs injected
    my $log = substr $s->error_log, $self->{log_offset} // 0;
    my $killed = 0;
    for my $line (split /\n/, $log) {
        if ($line =~ /exited on signal (\d+)/) {
            if ($1 == 9 && $killed < @kills) { $killed++; next }
            $bad->(no_worker_crash => $line);
        } elsif ($line =~ /\[(?:alert|emerg|crit)\]/) {
            $bad->(no_alert_in_log => $line);
        }
    }

    return $self->report;
}

# the error log's lines naming $needle (their message), for the examples
sub logtrail {
    my ($self, $needle) = @_;
    $self->{elog} //= [split /\n/, substr $self->{s}->error_log,
                                     $self->{log_offset} // 0];
    my @l = map { /\] \d+#\d+: (?:\*\d+ )?(.*?)(?:, client: .*)?$/ ? $1 : $_ }
            grep { index($_, $needle) >= 0 } @{ $self->{elog} };
    return '' unless @l;
    return '; log: ' . join ' / ', @l[0 .. ($#l < 1 ? $#l : 1)];
}

# what happened around a time (ISO 8601, as nginx writes createdAt): the
# faults injected within 2 s of it, and the account's confirms in flight
sub around {
    my ($self, $A, $iso) = @_;
    my ($Y, $M, $D, $h, $m, $sec) = ($iso // '')
        =~ /^(\d+)-(\d+)-(\d+)T(\d+):(\d+):(\d+(?:\.\d+)?)Z$/
        or return '';
    my $t = Time::Local::timegm(0, $m, $h, $D, $M - 1, $Y) + $sec;
    my @f = map { sprintf '%s %+.2f s', $_->{kind}, $_->{t} - $t }
            grep { abs($_->{t} - $t) <= 2 } @{ $self->{fault_log} // [] };
    my @c = map { sprintf '%s %s [%+.2f, %+.2f] s', $_->{ep}, $_->{st},
                          $_->{t0} - $t, $_->{t1} - $t }
            grep { ($_->{a} // '') eq $A && $_->{ep} =~ /confirm/
                   && $_->{t0} <= $t + 0.5 && $_->{t1} >= $t - 0.5 }
            @{ $self->{ops} // [] };
    return '; faults near: ' . (join(', ', @f) || 'none')
         . '; confirms in flight: ' . (join(', ', @c) || 'none');
}

# the Stripe calls of a line request (by its Idempotency-Keys)
sub trail {
    my ($self, $id) = @_;
    $self->{slog} //= $self->{s}->stub(GET => '/_stub/state')->res->json
                      ->{log} // [];
    my @e = grep { ($_->{idempotency_key} // '') =~ /\Q$id\E/ }
            @{ $self->{slog} };
    return '; no Stripe call' unless @e;
    return '; stripe: ' . join ', ', map {
        "$_->{method} $_->{path} -> "
        . ($_->{dropped} ? 'dropped' : $_->{status} // '?')
        . ($_->{cut} ? ' cut' : '') . ($_->{fault} ? ' (fault)' : '')
    } @e;
}

sub table {
    my ($title, $head, @rows) = @_;
    my @w = map { length } @$head;
    for my $r (@rows) {
        $w[$_] = length $r->[$_] > $w[$_] ? length $r->[$_] : $w[$_]
            for 0 .. $#$r;
    }
    my $fmt = join('  ', map { "%-${_}s" } @w) . "\n";
    return "$title\n" . sprintf($fmt, @$head)
        . sprintf($fmt, map { '-' x $_ } @w)
        . join('', map { sprintf $fmt, @$_ } @rows) . "\n";
}

sub report {
    my ($self) = @_;
    my (%by, %eps, %sts);
    for my $o (@{ $self->{ops} }) {
        $by{ $o->{ep} }{ $o->{st} }++;
    }
    my @op_rows = map {
        my $ep = $_;
        [$ep, join(' ', map { "$_:$by{$ep}{$_}" } sort keys %{ $by{$ep} })];
    } sort keys %by;
    my $nops = @{ $self->{ops} };

    my %fk;
    $fk{ $_->{kind} }++ for @{ $self->{fault_log} };
    my @f_rows = map { [$_, $fk{$_}] } sort keys %fk;
    my $aborted = grep { $_->{st} eq 'aborted' } @{ $self->{ops} };
    push @f_rows, ['client_abort (by clients)', $aborted]
        if grep { $_ eq 'client_abort' } @{ $self->{faults} };
    # "failed: ..." from the injector, "busy script ... failed: ..." from
    # redis_busy: anywhere in the detail
    my @failed = grep { $_->{detail} =~ /failed/ } @{ $self->{fault_log} };
    my $failed_faults = @failed;

    my $nv = 0;
    my $examples = '';
    my @i_rows = map {
        my $v = $self->{v}{$_};
        $nv += @$v;
        if (@$v) {
            $examples .= "$_ (" . @$v . "):\n";
            $examples .= '  - ' . (length > 400 ? substr($_, 0, 400) . '...'
                                                : $_) . "\n"
                for @$v[0 .. ($#$v < 4 ? $#$v : 4)];
        }
        [$_, @$v ? 'FAIL' : 'pass', scalar @$v];
    } @INVARIANTS;

    my $text = sprintf("chaos run: seed %d, %d s, %d clients, %d operations,"
        . " %d faults (%d failed to inject)\n\n", $self->{seed},
        $self->{seconds}, $self->{clients}, $nops,
        scalar @{ $self->{fault_log} }, $failed_faults)
        . table('Operations (endpoint: status:count)',
                ['endpoint', 'statuses'], @op_rows)
        . table('Faults injected', ['kind', 'count'], @f_rows)
        . join('', map { "fault not injected: $_->{kind}: $_->{detail}\n" }
                   @failed)
        . ($self->{skipped} ? "Fault kinds skipped: $self->{skipped}\n\n"
                            : '')
        . table('Invariants', ['invariant', 'result', 'violations'], @i_rows)
        . ($examples ? "Violations (at most 5 examples each)\n$examples\n"
                     : '')
        . ($nv ? "$nv violations\n" : "no violations\n");

    # kinds: injections per kind, failed ones left out; failed: the
    # injections that failed; skipped: kinds the stub did not know
    my %injected;
    $injected{ $_->{kind} }++
        for grep { $_->{detail} !~ /failed/ } @{ $self->{fault_log} };
    return {violations => $nv, report => $text, v => $self->{v},
            ops => $nops, faults => scalar @{ $self->{fault_log} },
            kinds => \%injected, failed => \@failed, aborted => $aborted,
            skipped => $self->{skipped}};
}

1;
