# The Lines API on a Redis Cluster (3 masters and 3 replicas, started by
# the harness) through the loss of a master and through a slot
# migration (issue 10's failover proof for the Lines API; t/038 gives it
# for the Provisioning API). With linegate_redis_wait 1:
#
# * a workspace's master SIGKILLed while creations (each with its
#   Idempotency-Key) and reads of the lines created run: clients get only
#   201, 200, or 503 with Retry-After; every creation answered 201 is
#   there after the promotion; a creation retried with its key gives the
#   same line, never a second one; creations are answered 201 again
#   without a reload; every included line created has its entry in the
#   set-up stream lg:provisioning (at least once on a cluster: the
#   reconciliation sweep relays what a cut relay left in
#   lg:{fleet}:lr:setup, which ends empty);
# * creations and reads of workspaces whose slots a real `redis-cli
#   --cluster reshard` moves meanwhile all answer 201 or 200, with one
#   line per 201, each in lg:provisioning;
# * the fleet's master failed over by CLUSTER FAILOVER (it stays up, a
#   replica, its connections open): creations sent at once, whose set-up
#   and journal members' ZADDs it answers MOVED and their WAIT "ERR WAIT
#   cannot be used with replica instances", answer 201 or 503 with
#   Retry-After, never 500 (before 2026-11-29 that refusal failed the
#   pipeline as an error no retry changes; a likely cause of the rare
#   500 of the first subtest too, whose killed master, started again,
#   workers connect to again while it turns replica); each sent again
#   with its key has one line, and nothing is left in the fleet's
#   journals.
#
# The workload cannot legitimately give 409 or 429: only included lines
# (growth: two phone lines each, one creation per line), one attempt of a
# key at a time, and the test stack's workspace rate is 100000r/m.
use strict;
use warnings;
use lib 't/lib';

use Test::More;
use LG::Stack;
use LG::Lines qw(body);
use LG::RedisCluster;
use LG::Test qw(answer_is eventually);
use Time::HiRes qw(sleep time);
use Mojo::JSON qw(encode_json decode_json);
use IO::Handle;
use POSIX ();

# as t/038: WAIT's timeout 2 s within a command timeout of 3 s (a loaded
# machine's replica may take longer to acknowledge); lost_after 5 s, so
# that the sweep may take what a cut relay left (60 s at least for the
# set-up relay's members, whatever lost_after says)
my $s = LG::Stack->new(redis => 'cluster', REDIS_COMMAND_TIMEOUT => '3s',
                       HTTP_EXTRA => 'linegate_redis_wait 1 2s; '
                                     . 'linegate_reconcile_lost_after 5s;')
    ->start;
my $l = LG::Lines->new($s);

my $CREATE = $LG::Lines::CREATE;
my $SETUP = 'lg:{fleet}:lr:setup';

sub ws_key { return "lg:{ws:$_[0]}" }

# the answers of a run, as the child wrote them
sub slurp_json {
    my ($f) = @_;
    open my $fh, '<', $f or return undef;
    local $/;
    return decode_json(<$fh>);
}

# "<kind> <code>" lines the child appended so far
sub progress {
    my ($f, $re) = @_;
    open my $fh, '<', $f or return 0;
    return scalar grep { /$re/ } <$fh>;
}

# the workload's jobs: two included phone lines for each workspace, the
# first of each, then the second, each with its Idempotency-Key
sub creations {
    my ($tag, @wss) = @_;
    return map { my $n = $_;
                 map { {w => $_, key => "$tag-$_->{id}-$n",
                        body => body(channelType => 'phone')} } @wss
               } 1 .. 2;
}

# A child process running @$jobs (creations: {w, key, body}), $o{creates}
# at once, with $o{gets} GETs of lines it created in the same batch, until
# $stop exists and no job is left (at most $o{drain} s after $stop; a
# job answered other than 201 is sent again with its key 0.5 s later when
# $o{retry}, else dropped). Every answer in $out (JSON), a line per
# answer in "$out.progress". Returns its pid.
sub workload {
    my ($jobs, $stop, $out, %o) = @_;
    my $pid = fork // die "fork: $!";
    return $pid if $pid;

    open my $pg, '>', "$out.progress" or POSIX::_exit(1);
    $pg->autoflush(1);
    my @pending = map { {%$_, nb => 0} } @$jobs;
    my (@created, @res, $stopped);
    my $t0 = time;
    while (1) {
        $stopped //= time if -e $stop;
        last if $stopped && (!@pending || time - $stopped > $o{drain});
        last if time - $t0 > 600;
        my $now = time;
        my @ready = grep { $_->{nb} <= $now } @pending;
        splice @ready, $o{creates} if @ready > $o{creates};
        my @gets = @created
            ? map { $created[int rand @created] } 1 .. $o{gets} : ();
        if (!@ready && !@gets) {
            sleep 0.05;
            next;
        }
        my $at = time;
        my @txs = eval {
            $l->parallel(
                (map { [$_->{w}, POST => $CREATE, $_->{body},
                        'Idempotency-Key' => $_->{key}] } @ready),
                (map { [$_->[0], GET => "$CREATE/$_->[1]"] } @gets));
        };
        if (!@txs) {
            # no whole batch (a connection lost): every job kept, its
            # outcome unknown
            push @res, {kind => 'batch', code => 0, at => $at,
                        body => "$@"};
            print $pg "batch 0\n";
            $_->{nb} = time + 0.5 for @ready;
            sleep 0.2;
            next;
        }
        for my $i (0 .. $#txs) {
            my $res = $txs[$i]->res;
            my $code = $res->code // 0;
            my $b = eval { $res->json };
            my %a = (code => $code, at => $at,
                     retry => $res->headers->header('Retry-After'));
            if ($i < @ready) {
                my $j = $ready[$i];
                %a = (%a, kind => 'create', ws => $j->{w}{id},
                      key => $j->{key},
                      replayed => $res->headers->header('Idempotent-Replayed'));
                if ($code == 201) {
                    $a{id} = ref $b eq 'HASH' ? $b->{line}{_id} : undef;
                    push @created, [$j->{w}, $a{id}] if defined $a{id};
                }
                if ($code == 201 || !$o{retry}) {
                    @pending = grep { $_ != $j } @pending;
                }
                else {
                    $j->{nb} = time + 0.5;
                }
            }
            else {
                my $g = $gets[$i - @ready];
                %a = (%a, kind => 'get', ws => $g->[0]{id}, id => $g->[1]);
            }
            $a{body} = substr($res->body // '', 0, 300)
                unless $code == 200 || $code == 201;
            push @res, \%a;
            print $pg "$a{kind} $code\n";
        }
        sleep $o{pause} // 0.05;
    }
    open my $fh, '>', $out or POSIX::_exit(1);
    print $fh encode_json({answers => \@res,
                           left => [map { $_->{key} } @pending]});
    close $fh;
    POSIX::_exit(0);
}

# "<kind> <code>" => count
sub tally {
    my ($res) = @_;
    my %by;
    $by{"$_->{kind} $_->{code}"}++ for @$res;
    return \%by;
}

# the answer of $call once it is not a 503 (a worker still reconnecting),
# asked again for 30 s at most; the last answer otherwise
sub settled {
    my ($call) = @_;
    my $until = time + 30;
    my $tx = $call->();
    while (($tx->res->code // 0) == 503 && time < $until) {
        sleep 0.2;
        $tx = $call->();
    }
    return $tx;
}

# Until every [ws, id] of @$lines has an entry in lg:provisioning and the
# set-up relay's journal is empty, a reconciliation run every 2 s (the
# sweep relays a member once 60 s old), at most $limit s. The lines
# without an entry, and the journal's size.
sub relayed {
    my ($lines, $limit) = @_;
    my $until = time + $limit;
    my (@missing, $left);
    while (1) {
        my %in = map { ("$_->{workspace} $_->{id}" => 1) } $l->stream;
        @missing = grep { !$in{"$_->[0] $_->[1]"} } @$lines;
        $left = $l->redis->zcard($SETUP);
        last if (!@missing && !$left) || time > $until;
        $s->op(POST => '/reconciliation/run');
        sleep 2;
    }
    return (\@missing, $left);
}

my $fleet = $s->cluster_master_of($SETUP);

subtest 'a workspace\'s master SIGKILLed under creations and polls' => sub {
    ok($s->cluster_wait_ok(30, replicas => 1), 'every master has a replica')
        or return;
    # the master killed: one that holds neither the fleet's journals nor
    # the set-up stream (t/038 kills the fleet's master), so that what is
    # lost is the workspaces'
    my $stream = $s->cluster_master_of('lg:provisioning');
    my ($victim) = grep { $_ ne $fleet && $_ ne $stream }
                   $s->cluster_masters;
    ($victim) = grep { $_ ne $fleet } $s->cluster_masters unless $victim;
    # twelve workspaces on that master, twelve on the others, each with
    # its two included phone lines to create, interleaved
    my (@on, @off, $spare);
    for (my $i = 1; @on < 12 || @off < 12 || !$spare; $i++) {
        my $id = "org_fo$i";
        my $mine = $s->cluster_master_of(ws_key($id)) eq $victim;
        if ($mine && !$spare) { $spare = $l->workspace($id); next }
        next if $mine ? @on >= 12 : @off >= 12;
        push @{ $mine ? \@on : \@off }, $l->workspace($id);
    }
    my @wss = map { ($on[$_], $off[$_]) } 0 .. 11;
    my %on = map { $_->{id} => 1 } @on;
    my @jobs = creations('fo', @wss);

    my $dir = $s->dir;
    my ($stop, $out) = ("$dir/fo.stop", "$dir/fo.json");
    my $pid = workload(\@jobs, $stop, $out, creates => 2, gets => 4,
                       retry => 1, drain => 120);

    # once some creations were answered (of the victim's workspaces too)
    ok(eventually(sub { progress("$out.progress", qr/^create 201/) >= 8 },
                  60), 'creations answered before the kill')
        or do { open my $fh, '>', $stop; close $fh; waitpid $pid, 0;
                return };
    $s->cluster_kill_master($victim);
    my $killed = time;
    ok($s->cluster_wait_ok(60), 'a replica took the slots over');
    my $promoted = time;
    my $new = $s->cluster_master_of(ws_key($on[0]{id}));
    isnt($new, $victim, "the workspaces' slots on $new, not $victim");
    diag(sprintf 'promoted %.1f s after the kill', $promoted - $killed);
    # linegate_redis_wait 1: the new master's writes are acknowledged
    # once it has a replica again (until then, an unknown outcome: 503)
    $s->cluster_start_node($victim);

    # served again without a reload (the seconds reported, not asserted)
    my ($back, $last);
    while (time - $promoted < 30) {
        my $tx = $l->create($spare, body(channelType => 'phone'),
                            'Idempotency-Key' => 'fo-back');
        $last = ($tx->res->code // 0) . ' ' . ($tx->res->body // '');
        if (($tx->res->code // 0) == 201) {
            $back = time - $promoted;
            last;
        }
        sleep 0.2;
    }
    ok(defined $back, 'a creation answered 201 after the promotion')
        or diag("last: $last");
    diag(sprintf 'creations again %.1f s after the promotion', $back // -1);
    ok($s->cluster_wait_ok(60, replicas => 1),
       'the old master back, as a replica');

    open my $fh, '>', $stop or die "$stop: $!";
    close $fh;
    waitpid $pid, 0;
    ok(!$?, 'the creations and polls ran to their end');
    my $run = slurp_json($out) or return fail('the answers written');
    my $res = $run->{answers};
    my $by = tally($res);
    diag('answers: ' . join ', ', map { "$_ x$by->{$_}" } sort keys %$by);

    my @bad = grep { !($_->{kind} eq 'create' && $_->{code} =~ /^(?:201|503)$/)
                     && !($_->{kind} eq 'get' && $_->{code} =~ /^(?:200|503)$/) }
              @$res;
    is(scalar @bad, 0, 'only 201, 200 or 503')
        or diag(explain([@bad[0 .. ($#bad < 9 ? $#bad : 9)]]));
    is(scalar(grep { $_->{code} == 503 && !length($_->{retry} // '') }
              @$res), 0,
       'every 503 with Retry-After');
    ok($by->{'create 503'} || $by->{'get 503'},
       'the loss was seen (503s: the run met the failover)');
    is_deeply($run->{left}, [], 'every creation answered 201 in the end');

    # the creations' outcomes, by key
    my (%id_of, %unknown, %ids_of_ws);
    for (grep { $_->{kind} eq 'create' } @$res) {
        if ($_->{code} == 201) {
            if (defined $id_of{$_->{key}} && $id_of{$_->{key}} ne $_->{id}) {
                fail("$_->{key}: two lines, $id_of{$_->{key}} and $_->{id}");
            }
            $id_of{$_->{key}} = $_->{id};
            $ids_of_ws{$_->{ws}}{$_->{id}} = 1;
        }
        else {
            $unknown{$_->{key}}++;
        }
    }
    my @retried = grep { $id_of{$_} } keys %unknown;
    diag(scalar(@retried) . ' creations answered 503 then 201 to their key; '
         . scalar(grep { $unknown{$_->{key}} && $on{$_->{w}{id}} } @jobs)
         . ' of them on the lost master');
    is(scalar keys %id_of, scalar @jobs, 'every key: a line');

    # linegate_redis_wait 1: every 201 was on a replica before it was sent
    my @lost;
    for my $j (@jobs) {
        my $id = $id_of{$j->{key}} // next;
        my $code = settled(sub { $l->get($j->{w}, $id) })->res->code // 0;
        push @lost, "$j->{key} $id: $code" if $code != 200;
    }
    is_deeply(\@lost, [], 'every creation answered 201 still there (GET 200)');

    # the same key after the failover: the same line, not a second one
    my @other;
    for my $j (@jobs) {
        my $tx = settled(sub { $l->create($j->{w}, $j->{body},
                                          'Idempotency-Key' => $j->{key}) });
        my $id = eval { $tx->res->json->{line}{_id} } // '';
        push @other, "$j->{key}: " . ($tx->res->code // 0) . " $id"
            unless ($tx->res->code // 0) == 201
                && $id eq ($id_of{$j->{key}} // '')
                && ($tx->res->headers->header('Idempotent-Replayed') // '')
                   eq 'true';
    }
    is_deeply(\@other, [], 'each creation sent again with its key: its '
              . 'line replayed');

    # no line without its 201 (the workspace's index of live requests)
    my @extra;
    for my $w (@wss) {
        my @ids = $l->request_ids($w);
        my $keys = grep { $_->{w} == $w } @jobs;
        my $ok = keys %{ $ids_of_ws{$w->{id}} // {} };
        my $unk = grep { $_->{w} == $w && !$id_of{$_->{key}}
                         && $unknown{$_->{key}} } @jobs;
        push @extra, "$w->{id}: " . scalar(@ids) . " lines, $ok answered "
                     . "201, $unk unknown"
            if @ids > $ok + $unk
            || grep { !$ids_of_ws{$w->{id}}{$_} } @ids;
    }
    is_deeply(\@extra, [], 'no workspace has a line no 201 named');

    # every included line in the set-up stream (at least once), the
    # relay's journal empty once the sweep took what the kill cut
    my @lines = map { [$_->{w}{id}, $id_of{$_->{key}}] }
                grep { $id_of{$_->{key}} } @jobs;
    my $mark = length $s->error_log;
    my $members = $l->redis->zcard($SETUP);
    my ($missing, $left) = relayed(\@lines, 180);
    my $swept = () = substr($s->error_log, $mark)
        =~ /set-up relay unsettled: its entry appended/g;
    diag("$members member(s) left in $SETUP after the run, "
         . "$swept entries appended by the sweep");
    is_deeply($missing, [], 'every included line created: an entry in '
              . 'lg:provisioning');
    is($left, 0, "$SETUP empty");
};

subtest 'redis-cli --cluster reshard under creations: no error at all' => sub {
    ok($s->cluster_wait_ok(60, replicas => 1), 'every master has a replica')
        or return;
    $fleet = $s->cluster_master_of($SETUP);
    my ($from, $to) = grep { $_ ne $fleet } $s->cluster_masters;
    my $nslots = 1500;
    my %moving = map { $_ => 1 }
                 ($s->cluster_slots_of($from))[0 .. $nslots - 1];
    my @wss;
    for my $i (1 .. 50_000) {
        next unless $moving{LG::RedisCluster::keyslot(ws_key("org_rs$i"))};
        push @wss, $l->workspace("org_rs$i");
        last if @wss == 30;
    }
    is(scalar @wss, 30, 'thirty workspaces in the slots that move');
    my @jobs = creations('rs', @wss);

    my $dir = $s->dir;
    my ($stop, $out) = ("$dir/rs.stop", "$dir/rs.json");
    my $pid = workload(\@jobs, $stop, $out, creates => 1, gets => 3,
                       retry => 0, drain => 120);
    eventually(sub { progress("$out.progress", qr/^create 201/) >= 2 }, 30);
    my $t0 = time;
    $s->cluster_reshard($from, $to, $nslots);
    my $rc = $s->cluster_reshard_wait(180);
    my $t1 = time;
    ok(defined $rc && $rc == 0, "reshard of $nslots slots done")
        or diag($s->cluster_reshard_log);
    diag(sprintf 'the reshard took %.1f s', $t1 - $t0);
    sleep 0.5;
    open my $fh, '>', $stop or die "$stop: $!";
    close $fh;
    waitpid $pid, 0;
    ok(!$?, 'the creations and polls ran to their end');
    my $run = slurp_json($out) or return fail('the answers written');
    my $res = $run->{answers};
    my $by = tally($res);
    diag('answers: ' . join ', ', map { "$_ x$by->{$_}" } sort keys %$by);
    diag(scalar(grep { $_->{kind} eq 'create' && $_->{at} >= $t0
                       && $_->{at} <= $t1 } @$res)
         . ' creations and '
         . scalar(grep { $_->{kind} eq 'get' && $_->{at} >= $t0
                         && $_->{at} <= $t1 } @$res)
         . ' reads sent while the reshard ran');

    my @bad = grep { $_->{code} != ($_->{kind} eq 'create' ? 201 : 200) }
              @$res;
    is(scalar @bad, 0, 'every creation answered 201, every read 200')
        or diag(explain([@bad[0 .. ($#bad < 9 ? $#bad : 9)]]));
    is_deeply($run->{left}, [], 'every creation sent');
    is(scalar(grep { $s->cluster_master_of(ws_key($_->{id})) ne $to } @wss),
       0, 'the workspaces\' slots moved');

    my (%ids_of_ws, @lines);
    for (grep { $_->{kind} eq 'create' && $_->{code} == 201 } @$res) {
        $ids_of_ws{$_->{ws}}{$_->{id}} = 1;
        push @lines, [$_->{ws}, $_->{id}];
    }
    my @wrong;
    for my $w (@wss) {
        my @ids = $l->request_ids($w);
        my $ok = $ids_of_ws{$w->{id}} // {};
        push @wrong, "$w->{id}: " . scalar(@ids) . ' lines, '
                     . scalar(keys %$ok) . ' answered 201'
            if @ids != keys %$ok || grep { !$ok->{$_} } @ids;
    }
    is_deeply(\@wrong, [], 'one line per creation answered 201');
    my ($missing, $left) = relayed(\@lines, 180);
    is_deeply($missing, [], 'every included line created: an entry in '
              . 'lg:provisioning');
    is($left, 0, "$SETUP empty");
};

subtest 'CLUSTER FAILOVER of the fleet\'s master: a WAIT the demoted '
        . 'master refuses is no 500' => sub {
    my $r = $l->redis;
    my $INFLIGHT = 'lg:{fleet}:lr:inflight';
    my (@bad, @unknown, @answers);
    for my $round (1 .. 3) {
        ok($s->cluster_wait_ok(60, replicas => 1),
           "round $round: every master has a replica") or return;
        # the master of the creations' set-up and journal members (one
        # pipeline with the owner index, each member with its WAIT)
        my $m = $s->cluster_master_of($SETUP);
        my ($rep) = grep {
            ($r->node($_)->info('replication')->{master_port} // 0) == $m
        } $s->cluster_replicas;
        ok($rep, "round $round: a replica of $m") or return;
        # the workers' connections to $m opened (each worker's first
        # creation), so that it stays theirs, a replica once failed over
        my @warm = map { $l->workspace("org_mfw${round}_$_") } 1 .. 4;
        my @wss = map { $l->workspace("org_mf${round}_$_") } 1 .. 4;
        $l->parallel(map { [$_, POST => $CREATE,
                            body(channelType => 'phone')] } @warm);
        # graceful: $m stays up, a replica of $rep, its connections open;
        # not done within 5 s (a loaded machine), asked again, 3 times
        my ($tries, $until) = (0, 0);
        until (($s->cluster_master_of($SETUP) // 0) == $rep) {
            if (time >= $until) {
                last if $tries++ == 3;
                $s->cluster_failover($rep);
                $until = time + 10;
            }
            sleep 0.05;
        }
        is($s->cluster_master_of($SETUP), $rep,
           "round $round: $rep serves the fleet's slot now") or return;
        # at once, before a worker learns the new map otherwise: the
        # members' ZADDs answered MOVED by $m, and their WAIT refused
        # ("ERR WAIT cannot be used with replica instances")
        my @txs = $l->parallel(
            map { [$_, POST => $CREATE, body(channelType => 'phone'),
                   'Idempotency-Key' => "mf-$_->{id}"] } @wss);
        for my $i (0 .. $#wss) {
            my $res = $txs[$i]->res;
            my $code = $res->code // 0;
            push @answers, $code;
            push @bad, "$wss[$i]{id}: $code " . ($res->body // '')
                unless $code == 201
                    || ($code == 503
                        && length($res->headers->header('Retry-After') // '')
                        && (eval { $res->json->{code} } // '')
                           eq 'STORE_UNAVAILABLE');
            push @unknown, $wss[$i] if $code != 201;
        }
        # each again with its key: one line, whatever the first answer
        for my $w (@wss) {
            my $tx = settled(sub {
                $l->create($w, body(channelType => 'phone'),
                           'Idempotency-Key' => "mf-$w->{id}") });
            my $id = eval { $tx->res->json->{line}{_id} } // '';
            push @bad, "$w->{id} again: " . ($tx->res->code // 0)
                unless ($tx->res->code // 0) == 201;
            my @ids = $l->request_ids($w);
            push @bad, "$w->{id}: lines @ids, the key's $id"
                unless "@ids" eq $id;
            push @bad, "$w->{id}: a pending marker"
                if defined $l->pending($w);
        }
    }
    diag('answers: ' . join ' ', @answers);
    is_deeply(\@bad, [], 'each creation 201 or 503 STORE_UNAVAILABLE with '
              . 'Retry-After, and sent again with its key, one line');
    # nothing of a 503 left behind: no journal member (the reservation
    # a line never needed) nor set-up member the sweep would relay
    ok(eventually(sub { !$r->zcard($INFLIGHT) && !$r->zcard($SETUP) }, 30),
       "$INFLIGHT and $SETUP empty");
    my ($missing) = relayed([map { [$_->{id}, $l->request_ids($_)] }
                             @unknown], 60);
    is_deeply($missing, [], 'the lines first answered 503: in '
              . 'lg:provisioning') or diag(explain($missing));
};

done_testing;
