#!/usr/bin/perl
# Redis answers that make the store unavailable (LOADING, MOVED, NOAUTH,
# MISCONF, NOREPLICAS, BUSY, a script stopped by SCRIPT KILL) become a
# clear log line and a 503 with Retry-After (one that no retry changes,
# WRONGTYPE, a 500 naming the key's kind), and a durable write they
# refuse (a paid line's record killed or BUSY) is kept until Redis takes
# it; AUTH with password= works and the password is never logged; a
# graceful reload waits for a command in flight instead of dropping its
# request.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";

use IO::Socket::INET;
use Mojo::IOLoop;
use Mojo::UserAgent;
use File::Temp ();
use POSIX qw(_exit);
use Time::HiRes qw(sleep);
use Test::More;

use LG::Stack;
use LG::Test qw(:DEFAULT eventually);
use LG::Lines;

# A stand-in for a Redis server that answers every command with the error
# written in $file ("LOADING ...", "MOVED ..."): what a real server says
# while it loads its dataset, or when it is a cluster node.
sub fake_redis {
    my ($file) = @_;
    my $l = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0,
                                  Listen => 16, ReuseAddr => 1)
        or die "listen: $!";
    my $pid = fork // die "fork: $!";
    if ($pid == 0) {
        $SIG{CHLD} = 'IGNORE';
        while (my $c = $l->accept) {
            next if fork;
            serve($c, $file);
            _exit(0);
        }
        _exit(0);
    }
    return ($pid, $l->sockport);
}

sub serve {
    my ($c, $file) = @_;
    while (defined(my $line = <$c>)) {
        next unless $line =~ /^\*(\d+)/;
        for (1 .. $1) {
            my $len = <$c> // return;
            $len =~ /^\$(\d+)/ or return;
            read($c, my $buf, $1 + 2) or return;
        }
        open my $fh, '<', $file or return;
        # an empty file (stand_in_file's '', until answer_next): an empty
        # error, "-\r\n"
        chomp(my $err = <$fh> // '');
        print $c "-$err\r\n";
    }
}

# The file a stand-in reads its answer from, in a directory of its own,
# holding $text
sub stand_in_file {
    my ($name, $text) = @_;
    my $file = File::Temp::tempdir(CLEANUP => 1) . "/$name";
    answer_next($file, $text);
    return $file;
}

# what the stand-in answers from now on ('': pass the command on, where
# it can)
sub answer_next {
    my ($file, $text) = @_;
    open my $fh, '>', $file or die "$file: $!";
    print $fh $text;
    close $fh;
}

# nginx reloaded with linegate_redis $redis (a stand-in's address):
# true once a worker is connected
sub reload_onto {
    my ($s, $redis) = @_;
    my $from = length $s->error_log;
    open my $fh, '>', $s->prefix . '/nginx.conf' or die;
    print $fh $s->render(REDIS => $redis);
    close $fh;
    kill 'HUP', $s->{pids}{nginx};
    return $s->wait_redis_connected($from, 30);
}

# the stack, then its stand-in
sub stand_in_stop {
    my ($s, $pid) = @_;
    $s->stop;
    kill 'TERM', $pid;
    waitpid $pid, 0;
}

sub unavailable_ok {
    my ($s, $name, $log_re) = @_;
    my $tx = $s->op(GET => '/inventory');
    my $body = answer_is($tx, 503, $name);
    is($body->{code}, 'STORE_UNAVAILABLE', "$name: code");
    is($tx->res->headers->header('Retry-After'), '1', "$name: Retry-After");
    like($s->error_log, $log_re, "$name: logged clearly");
}

subtest 'LOADING and MOVED answers' => sub {
    my $file = stand_in_file('reply', "LOADING Redis is loading the "
                                      . "dataset in memory\n");

    my ($pid, $port) = fake_redis($file);
    my $s = LG::Stack->new(REDIS => "127.0.0.1:$port")->start;

    unavailable_ok($s, 'LOADING',
                   qr/redis unavailable: "LOADING Redis is loading/);

    answer_next($file, "MOVED 3999 127.0.0.1:6381\n");
    unavailable_ok($s, 'MOVED', qr/redis unavailable: "MOVED 3999/);

    # Redis 6 wraps the error a script's redis.call met in its own ERR
    # (7 answers it as it is): a demoted master's READONLY read as "ERR"
    # was a bug of ours, 500, no Retry-After
    answer_next($file, "ERR Error running script (call to f_f3a0c1): "
                       . "\@user_script:50: \@user_script: 50: -READONLY "
                       . "You can't write against a read only replica.\n");
    unavailable_ok($s, "Redis 6: a script's READONLY",
                   qr/redis unavailable: "ERR Error running script \(call to f_f3a0c1\)/);

    stand_in_stop($s, $pid);
};

# Redis refusing writes while it reads: MISCONF (an RDB save failed, with
# stop-writes-on-bgsave-error) and NOREPLICAS (fewer replicas than
# min-replicas-to-write). Both end by themselves once the disk or the
# replica is back: a creation answers 503 with Retry-After, and the
# release of its line request, a durable write, waits for Redis to take
# it (before: MISCONF was "a bug of ours", the write dropped with an
# alert).
subtest 'MISCONF and NOREPLICAS: unavailable, durable writes kept' => sub {
    my $s = LG::Stack->new->start;
    my $r = $s->redis;
    my $l = LG::Lines->new($s);
    my $w = $l->workspace('org_refusing');

    my @refusals = (
        ['MISCONF', sub {
            # the save renames its file onto a directory: it fails
            my $dir = ($r->config_get('dir'))[1];
            mkdir "$dir/dump.rdb" or die "mkdir: $!";
            $r->config_set('save', '3600 1');
            $r->bgsave;
            eventually(sub {
                $r->info('persistence')->{rdb_last_bgsave_status} eq 'err'
            }, 10) or die 'the RDB save did not fail';
        }, sub {
            # no save point: Redis no longer refuses writes for the save
            $r->config_set('save', '');
        }],
        ['NOREPLICAS', sub { $r->config_set('min-replicas-to-write', 1) },
         sub { $r->config_set('min-replicas-to-write', 0) }],
    );

    for my $case (@refusals) {
        my ($code, $refuse, $accept) = @$case;
        $refuse->();
        my $from = length $s->error_log;

        my $tx = $l->create($w);
        my $body = answer_is($tx, 503, "$code: a creation");
        is($body->{code}, 'STORE_UNAVAILABLE', "$code: code");
        is($tx->res->headers->header('Retry-After'), '1',
           "$code: Retry-After");
        my $log = substr $s->error_log, $from;
        like($log, qr/redis unavailable: "$code /, "$code: logged as such");

        my $release = qr/durable write "lr_release [0-9a-f]+"/;
        ok(eventually(sub {
               substr($s->error_log, $from)
                   =~ /$release not answered \(attempt 1: $code /
           }, 5), "$code: the release waits for Redis")
            or diag(substr $s->error_log, $from);

        $accept->();
        ok(eventually(sub { substr($s->error_log, $from) =~ /$release done/ },
                      10), "$code: and is written once Redis takes writes again");
        unlike(substr($s->error_log, $from), qr/refused by redis/,
               "$code: not refused as final");
    }

    my $tx = $l->create($w);
    is($tx->res->code, 201, 'Redis takes writes again: 201')
        or diag($tx->res->body);
};

# An error no retry changes: a key of another type where linegate keeps
# a hash (corrupted data, a key written by hand). Before, it answered 503
# with Retry-After as LOADING does, and a client retried for ever: now a
# 500 in the API's format, no Retry-After, a line naming the script and
# the key's kind (never its ids), counted as kind="refused".
subtest 'WRONGTYPE: 500, no Retry-After, the key kind logged' => sub {
    my $s = LG::Stack->new->start;
    my $r = $s->redis;
    my $l = LG::Lines->new($s);
    my $w = $l->workspace('org_wrongtype');
    my $id = $l->created($w);

    # the workspace's hash replaced by a string
    my $ws = "lg:{ws:$w->{id}}";
    $r->del($ws);
    $r->set($ws, 'not a hash');
    my $before = $l->state_keys($w);
    my $from = length $s->error_log;

    for my $call (['a creation', sub { $l->create($w) }],
                  ['a cancel', sub { $l->manage($w, $id, 'cancel') }])
    {
        my ($name, $do) = @$call;
        my $tx = $do->();
        $l->error_is($tx, 500, 'INTERNAL_ERROR', $name);
        is($tx->res->headers->header('Retry-After'), undef,
           "$name: no Retry-After");
        # but the release mark of the creation's id (lr_release's, as
        # after any creation that failed: a late script finds it)
        my $after = $l->state_keys($w);
        delete $after->{$_} for grep { /\}:lrvoid:/ } keys %$after;
        is_deeply($after, $before, "$name: nothing written");
        sleep 1.1;    # the next line is not the same second's
    }

    my $log = substr $s->error_log, $from;
    like($log, qr/redis\ error:\ "WRONGTYPE\ [^"]*"\ on\ lr_create
                  \ of\ keys\ \Qlg:{ws:*}, lg:{ws:*}:keys,\E/x,
         'logged at error, naming the script and the key kinds');
    unlike($log, qr/\Q$w->{id}\E[^ ]* \(logged once/,
           'the line names no id');
    unlike($log, qr/lg:\?/, 'every key of the script has a kind');
    like($s->ua->get($s->url('/metrics'))->res->body,
         qr/^linegate_redis_errors_total\{kind="refused"\} [1-9]/m,
         'counted as refused');
};

# A stand-in between nginx and a real Redis: every byte passed on, but
# the replies to lr_resolve (recognised by its SHA, taken from its SCRIPT
# LOAD, or by its source in an EVAL) are replaced by what $file holds
# while it is not empty. Redis has run the script: only its answer is
# odd (a proxy in between, a script of another version).
sub resp_end {
    my ($buf, $at) = @_;
    return undef if $at >= length $buf;
    my $nl = index($buf, "\r\n", $at);
    return undef if $nl < 0;
    my $t = substr($buf, $at, 1);
    my $n = substr($buf, $at + 1, $nl - $at - 1);
    my $end = $nl + 2;
    if ($t eq '$') {
        return $end if $n < 0;
        return length($buf) >= $end + $n + 2 ? $end + $n + 2 : undef;
    }
    if ($t eq '*') {
        for (1 .. ($n < 0 ? 0 : $n)) {
            $end = resp_end($buf, $end) // return undef;
        }
    }
    return $end;
}

sub resp_args {
    my ($buf, $at, $end) = @_;
    my @a;
    my $p = index($buf, "\r\n", $at) + 2;
    while ($p < $end) {
        my $nl = index($buf, "\r\n", $p);
        my $len = substr($buf, $p + 1, $nl - $p - 1);
        push @a, substr($buf, $nl + 2, $len);
        $p = $nl + 2 + $len + 2;
    }
    return @a;
}

sub resolve_proxy {
    my ($upstream, $file) = @_;
    require IO::Select;
    require Digest::SHA;
    my $l = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0,
                                  Listen => 16, ReuseAddr => 1)
        or die "listen: $!";
    my $pid = fork // die "fork: $!";
    return ($pid, $l->sockport) if $pid;

    $SIG{CHLD} = 'IGNORE';
    while (my $c = $l->accept) {
        next if fork;
        my $u = IO::Socket::INET->new("127.0.0.1:$upstream") or _exit(1);
        my ($in, $out, $sha, @tags) = ('', '');
        my $sel = IO::Select->new($c, $u);
        while (1) {
            for my $h ($sel->can_read) {
                sysread($h, my $b, 65536) or _exit(0);
                if ($h == $c) {
                    $in .= $b;
                    while (defined(my $e = resp_end($in, 0))) {
                        my @a = resp_args($in, 0, $e);
                        my $cmd = uc($a[0] // '');
                        # a line of its own (the comments are not sent)
                        # (wh_invoice's is KEYS[7])
                        my $src = qr/ARGV\[8\] == 'w' and KEYS\[5\]/;
                        if ($cmd eq 'SCRIPT' && ($a[2] // '') =~ $src) {
                            $sha = Digest::SHA::sha1_hex($a[2]);
                        }
                        push @tags, ($cmd eq 'EVALSHA' && $sha
                                     && $a[1] eq $sha)
                                    || ($cmd eq 'EVAL' && $a[1] =~ $src);
                        syswrite($u, substr($in, 0, $e, ''));
                    }
                } else {
                    $out .= $b;
                    while (defined(my $e = resp_end($out, 0))) {
                        my $reply = substr($out, 0, $e, '');
                        if (shift @tags) {
                            open my $fh, '<', $file or _exit(1);
                            my $odd = do { local $/; <$fh> };
                            $reply = $odd if length $odd;
                        }
                        syswrite($c, $reply);
                    }
                }
            }
        }
    }
    _exit(0);
}

# lr_resolve's answer of another shape than {changed, line} (or {0}:
# the request gone, a 404): before, a 404 for a request that exists
# (reconciliation on read, payment_link); the stored state is not
# understood, a 500.
subtest 'lr_resolve answered of another shape: 500, not 404' => sub {
    my $s = LG::Stack->new(RECONCILE_INTERVAL => '1s')->start;
    my $l = LG::Lines->new($s);
    my $file = stand_in_file('resolve', '');

    # nginx reloaded onto the stand-in
    my ($pid, $port) = resolve_proxy($s->redis_port, $file);
    ok(reload_onto($s, "127.0.0.1:$port"), 'reloaded behind the stand-in');
    my $from;

    my $n = 0;
    for my $case (
        ['reconciliation on read', sub { $l->get(@_) }],
        ['payment_link', sub { $l->manage(@_, 'payment_link') }])
    {
        my ($name, $do) = @$case;
        my $w = $l->workspace('org_shape' . ++$n);
        my ($id, $c) = $l->awaiting($w);
        $l->invoice_do($c->{invoiceId}, 'pay');
        sleep 1.1;    # past the interval: a read asks Stripe again

        # the line as a number, not a hash's fields
        answer_next($file, "*2\r\n:1\r\n:7\r\n");
        $from = length $s->error_log;

        my $tx = $do->($w, $id);
        $l->error_is($tx, 500, 'INTERNAL_ERROR', "$name: odd answer");
        like(substr($s->error_log, $from),
             qr/line request "\Q$id\E": lr_resolve's answer not understood/,
             "$name: logged");

        answer_next($file, '');
        my $b = $l->answer($l->get($w, $id), 200, "$name: read again");
        is($b->{status}, 'provisioning', "$name: the request exists, paid");
    }

    stand_in_stop($s, $pid);
};

# A script Redis runs for long: every other command meanwhile is answered
# -BUSY, and SCRIPT KILL stops it, its caller answered "Script killed by
# user with SCRIPT KILL" (Redis refuses to kill a script that wrote:
# UNKILLABLE, so a killed script wrote nothing). Both are Redis unable
# to serve for a moment: 503 with Retry-After in each API's format, and
# the limiter's on_error policy. Before, a killed script of ours was read
# as a bug (its code is ERR): a 500, no Retry-After.
sub send_cmd {
    my ($sock, @a) = @_;
    print $sock join '', "*" . @a . "\r\n",
                         map { '$' . length($_) . "\r\n$_\r\n" } @a;
}

subtest 'BUSY and a script killed by SCRIPT KILL: 503, Retry-After' => sub {
    require LG::Provision;
    my $public = LG::Test::public_dir('file.txt' => "ok\n");
    my $s = LG::Stack->new(
        HTTP_EXTRA => 'linegate_limit_zone busyz key=$arg_k rate=1r/h '
                      . 'burst=5;',
        SERVER_EXTRA => 'location /busy-closed/ { linegate_limit '
                        . 'zone=busyz; linegate_limit_on_error closed; '
                        . "root $public; try_files /file.txt =404; }")
        ->start;
    my $r = $s->redis;
    my $l = LG::Lines->new($s);
    my $p = LG::Provision->new($s);
    my $w = $l->workspace('org_busy');
    my $id = $l->created($w);
    my $a = $p->account('acct_busy');

    # a script of another client runs on; past the threshold, Redis
    # answers every other command -BUSY
    $r->config_set('lua-time-limit', 100);
    my $long = IO::Socket::INET->new("127.0.0.1:" . $s->redis_port)
        or die "connect: $!";
    send_cmd($long, 'EVAL', 'local i = 0 while true do i = i + 1 end', 0);
    sleep 0.3;
    my $from = length $s->error_log;

    my $tx = $l->get($w, $id);
    $l->error_is($tx, 503, 'STORE_UNAVAILABLE', 'BUSY: a line read');
    is($tx->res->headers->header('Retry-After'), '1',
       'BUSY: a line read: Retry-After');
    $tx = $p->preview($a);
    $p->error_is($tx, 503, 'store_unavailable', 'BUSY: a preview');
    is($tx->res->headers->header('Retry-After'), '1',
       'BUSY: a preview: Retry-After');
    my $res = $s->ua->get($s->url('/busy-closed/?k=busy'))->res;
    is($res->code, 503, 'BUSY: the limiter, on_error closed: 503');
    is($res->headers->header('Retry-After'), '1',
       'BUSY: the limiter: Retry-After');
    like(substr($s->error_log, $from), qr/redis unavailable: "BUSY /,
         'BUSY: logged as unavailable');

    # the operator stops it: what Redis tells the script's caller
    my $killer = IO::Socket::INET->new("127.0.0.1:" . $s->redis_port)
        or die "connect: $!";
    send_cmd($killer, 'SCRIPT', 'KILL');
    like(scalar <$killer>, qr/^\+OK/, 'SCRIPT KILL: OK');
    chomp(my $killed = <$long> // '');
    $killed =~ s/\r$//;
    like($killed, qr/^-ERR .*Script killed by user with SCRIPT KILL/,
         "the killed script's caller told: $killed");
    $killed =~ s/^-//;
    $r->config_set('lua-time-limit', 5000);

    # the same answer to a script of ours (it wrote nothing: Redis kills
    # no script that wrote), as Redis 7 and Redis 6 word it
    my $file = stand_in_file('reply', '');
    my ($pid, $port) = fake_redis($file);
    my $f = LG::Stack->new(REDIS => "127.0.0.1:$port")->start;
    for my $case (
        ['this Redis', $killed],
        ['Redis 7', 'ERR Script killed by user with SCRIPT KILL... script: '
                    . '653db1ceb7ef061910af88dc7ebf80737358169d, on '
                    . '@user_script:1.'],
        ['Redis 6', 'ERR Error running script (call to '
                    . 'f_2817d960235dc23d2cea9cc2c716a0b123b56be8): '
                    . '@user_script:3: Script killed by user with SCRIPT '
                    . 'KILL... '])
    {
        my ($name, $text) = @$case;
        answer_next($file, "$text\n");
        sleep 1.1;    # the line of the second before is logged once
        unavailable_ok($f, "killed, $name",
                       qr/redis unavailable: a script stopped by SCRIPT KILL, nothing written: "\Q$text\E"/);
    }
    stand_in_stop($f, $pid);
};

# A stand-in between nginx and a real Redis that, while $file is not
# empty, runs no call of the scripts whose source matches $src (their
# SHAs taken from their SCRIPT LOAD) and answers it with what $file
# holds, as Redis answers a script killed before it wrote; every other
# command and reply passed on, the replies in the order of their
# commands.
sub kill_proxy {
    my ($upstream, $file, $src) = @_;
    require IO::Select;
    require Digest::SHA;
    my $l = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0,
                                  Listen => 16, ReuseAddr => 1)
        or die "listen: $!";
    my $pid = fork // die "fork: $!";
    return ($pid, $l->sockport) if $pid;

    $SIG{CHLD} = 'IGNORE';
    while (my $c = $l->accept) {
        next if fork;
        my $u = IO::Socket::INET->new("127.0.0.1:$upstream") or _exit(1);
        my ($in, $out, %sha, @order) = ('', '');
        my $sel = IO::Select->new($c, $u);
        # each command's reply, in order: undef from Redis, else ours
        my $flush = sub {
            syswrite($c, shift @order) while @order && defined $order[0];
        };
        while (1) {
            for my $h ($sel->can_read) {
                sysread($h, my $b, 65536) or _exit(0);
                if ($h == $c) {
                    $in .= $b;
                    while (defined(my $e = resp_end($in, 0))) {
                        my @a = resp_args($in, 0, $e);
                        my $cmd = uc($a[0] // '');
                        my $bytes = substr($in, 0, $e, '');
                        if ($cmd eq 'SCRIPT' && ($a[2] // '') =~ $src) {
                            $sha{Digest::SHA::sha1_hex($a[2])} = 1;
                        }
                        my $ours = ($cmd eq 'EVALSHA' && $sha{$a[1]})
                                   || ($cmd eq 'EVAL' && $a[1] =~ $src);
                        my $kill = '';
                        if ($ours && open my $fh, '<', $file) {
                            $kill = do { local $/; <$fh> } // '';
                        }
                        if (length $kill) {
                            push @order, $kill;
                        } else {
                            push @order, undef;
                            syswrite($u, $bytes);
                        }
                    }
                } else {
                    $out .= $b;
                    while (defined(my $e = resp_end($out, 0))) {
                        my $reply = substr($out, 0, $e, '');
                        $flush->();
                        shift @order;
                        syswrite($c, $reply);
                    }
                }
                $flush->();
            }
        }
    }
    _exit(0);
}

# A purchase charged by Stripe whose record (pv_record) an operator's
# SCRIPT KILL stops, or Redis answers BUSY: the confirm answers 500 "will
# be recorded", and the record, a durable write, is sent again until
# Redis runs it, then its claim settles; a line request's store, below.
# Before, the killed record was a bug of ours: the durable write dropped
# with an alert ("refused by redis"), the paid line never recorded, its
# claim left to the sweep.
subtest 'a paid step killed or BUSY: written once Redis runs it' =>
sub {
    require LG::Provision;
    my $s = LG::Stack->new(STRIPE_TIMEOUT => '2s')->start;
    my $p = LG::Provision->new($s);
    $p->inventory($p->numbers(3));
    my $file = stand_in_file('kill', '');

    # pv_record's, lr_invoice_store's
    my ($pid, $port) = kill_proxy($s->redis_port, $file,
                                  qr/'createdAt',\ ARGV\[7\]
                                     |'invoiceId',\ ARGV\[3\],\ 'paymentUrl'/x);
    ok(reload_onto($s, "127.0.0.1:$port"), 'reloaded behind the stand-in');
    sleep 0.5;    # the old workers gone
    my $from;

    for my $case (
        ['killed', 'acct_killed_record',
         'ERR Script killed by user with SCRIPT KILL... script: f00d, on '
         . '@user_script:1.', qr/a script stopped by SCRIPT KILL/],
        ['BUSY', 'acct_busy_record',
         'BUSY Redis is busy running a script. You can only call SCRIPT '
         . 'KILL or SHUTDOWN NOSAVE.', qr/redis unavailable: "BUSY /])
    {
        my ($name, $id, $text, $log_re) = @$case;
        my $a = $p->account($id);
        my $tok = $p->token($a);
        $p->fault(latency_ms => 500);
        $from = length $s->error_log;

        # while Stripe works (the number claimed), the record is refused
        my ($tx, $done) = $p->during($p->confirm_req($a, $tok), sub {
            return 0 unless @{ $p->claims($id) };
            answer_next($file, "-$text\r\n");
            return 1;
        });
        ok($done, "$name: the record refused in time");
        $p->clear_faults;

        my $b = $p->error_is($tx, 500, 'provisioning_failed',
                             "$name: the confirm", qr/will be recorded/);
        ok($b->{subscription_id}, "$name: the subscription named");
        is_deeply($p->lines($id), {}, "$name: no line meanwhile");
        ok(eventually(sub {
               substr($s->error_log, $from)
                   =~ /durable write "the record of a paid line" not answered \(attempt \d+: \Q$text\E/
           }, 5), "$name: the record waits for Redis to run it")
            or diag(substr $s->error_log, $from);
        like(substr($s->error_log, $from), $log_re, "$name: logged as such");

        answer_next($file, '');
        ok(eventually(sub { %{ $p->lines($id) } }, 15),
           "$name: the line is recorded once Redis runs the script");
        my ($line) = values %{ $p->lines($id) };
        is($line->{subscription_id}, $b->{subscription_id},
           "$name: with its subscription");
        ok(eventually(sub { !@{ $p->claims($id) } }, 15),
           "$name: the claim settled");
        unlike(substr($s->error_log, $from), qr/refused by redis/,
               "$name: not refused as final");
        is(scalar(grep { $_->{account} eq $id } @{ $p->reconcile }), 0,
           "$name: nothing queued for reconciliation");
    }

    # a line request's store (lr_invoice_store), its invoice made: the
    # creation answers 503 (before, a 500), the store is sent again until
    # Redis runs it, and the same key then replays the 201 (before, the
    # killed store was dropped, "refused by redis": an invoice no request
    # named)
    my $l = LG::Lines->new($s);
    my $w = $l->workspace('org_killed_store');
    my $text = 'ERR Script killed by user with SCRIPT KILL... script: '
             . 'beef, on @user_script:1.';
    answer_next($file, "-$text\r\n");
    $from = length $s->error_log;
    my @key = ('Idempotency-Key' => 'killed-store-1');
    my $body = LG::Lines::body(channelType => 'email',
                               email => 'k@example.com');
    my $tx = $l->create($w, $body, @key);
    $l->error_is($tx, 503, 'STORE_UNAVAILABLE', 'a killed store');
    is($tx->res->headers->header('Retry-After'), '1',
       'a killed store: Retry-After');
    ok(eventually(sub {
           substr($s->error_log, $from)
               =~ /durable write "lr_invoice_store [^"]+" not answered \(attempt \d+: \Q$text\E/
       }, 5), 'a killed store: sent again')
        or diag(substr $s->error_log, $from);

    answer_next($file, '');
    ok(eventually(sub {
           substr($s->error_log, $from)
               =~ /durable write "lr_invoice_store [^"]+" done/
       }, 15), 'a killed store: stored once Redis runs it');
    my $b = $l->answer($l->create($w, $body, @key), 201,
                       'a killed store: the same key, retried');
    is($b->{status}, 'awaiting_payment', 'a killed store: billed');
    is(scalar(my @ids = $l->request_ids($w)), 1, 'a killed store: one request');
    is(scalar(my @inv = $l->invoices($w->{customer})), 1,
       'a killed store: one invoice');
    unlike(substr($s->error_log, $from), qr/refused by redis/,
           'a killed store: not refused as final');

    stand_in_stop($s, $pid);
};

subtest 'NOAUTH, then AUTH with password=' => sub {
    my $s = LG::Stack->new->start;
    my $r = $s->redis;

    # a password set behind linegate's back: its next connection is refused
    $r->config_set('requirepass', 'sekrit-pass-1');
    $r->client_kill('TYPE', 'normal');

    # the workers reconnect after their backoff: wait for the first refusal
    for (1 .. 50) {
        last if $s->error_log =~ /redis unavailable: "NOAUTH/;
        $s->op(GET => '/inventory');
        sleep 0.1;
    }
    unavailable_ok($s, 'NOAUTH', qr/redis unavailable: "NOAUTH/);

    # the same nginx, reloaded with the password
    ok(reload_onto($s, '127.0.0.1:' . $s->redis_port
                       . ' password=sekrit-pass-1'),
       'reloaded with password=');

    # a new client: the old one may hold a connection to an old worker
    my $ua = Mojo::UserAgent->new;
    my $code = 0;
    for (1 .. 50) {
        $code = $ua->get($s->url('/_linegate/inventory') =>
                         {Authorization => 'Bearer ' . $s->operator_token})
                   ->res->code // 0;
        last if $code == 200;
        sleep 0.1;
    }
    is($code, 200, 'AUTH with password= succeeds');
    unlike($s->error_log . $s->access_log, qr/sekrit-pass-1/,
           'the password is never logged');
};

subtest 'a graceful reload waits for a command in flight' => sub {
    my $s = LG::Stack->new->start;

    # Redis holds the reply for 300 ms (under the 500 ms command timeout)
    $s->redis->client_pause(300);

    my $code;
    $s->ua->get($s->url('/_linegate/inventory') =>
                {Authorization => 'Bearer ' . $s->operator_token} =>
                sub { $code = $_[1]->res->code; Mojo::IOLoop->stop });
    Mojo::IOLoop->timer(0.1 => sub { kill 'HUP', $s->{pids}{nginx} });
    Mojo::IOLoop->timer(5 => sub { Mojo::IOLoop->stop });
    Mojo::IOLoop->start;

    is($code, 200, 'the request in flight is answered across the reload');
    like($s->error_log, qr/gracefully shutting down/,
         'the old worker was shut down gracefully');
};

done_testing;
