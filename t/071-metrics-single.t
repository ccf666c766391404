# linegate's shared zones in nginx without a master (master_process off,
# the development mode). A reload there builds the new cycle in the one
# process, which serves on with what it remembered of the old one: the
# connections it had (nginx gives the new cycle none of its own, so only
# those go on answering, under the old configuration), its timers, and
# the module's pointers into the old cycle's zones, which nginx unmaps
# when the new configuration has none. An answer on a kept connection
# then read or wrote through them (a crash, the whole nginx): the key
# caches' epoch and the metrics' memos of series after a reload without
# linegate_api, linegate_limit's local state after one without its local
# fallback; a reload back made a new metrics zone the memos did not know.
use strict;
use warnings;
use lib 't/lib';

use Test::More;
use Time::HiRes qw(sleep);
use POSIX qw(WNOHANG);
use LG::Stack;
use LG::Lines;

my $s = LG::Stack->new(MASTER_PROCESS => 'off', WORKERS => 1)->start;
my $l = LG::Lines->new($s);
note "stack in " . $s->dir if $ENV{LG_KEEP};

# every request on $s->ua: its one kept connection is the only one that
# still answers after a reload
sub scrape { $s->ua->get($s->url('/metrics'))->res }

sub alive { waitpid($s->{pids}{nginx}, WNOHANG) == 0 }

# a reload to $api (1: the template's APIs, 0: none); back once nginx has
# built the new cycle: its "reconfiguring" line, then $check true
sub reload {
    my ($api, $check) = @_;
    my $from = length $s->error_log;
    open my $fh, '>', $s->prefix . '/nginx.conf' or die $!;
    print $fh $s->render(api => $api, MASTER_PROCESS => 'off',
                         WORKERS => 1);
    close $fh;
    kill 'HUP', $s->{pids}{nginx};
    my $ok = 0;
    for (1 .. 250) {
        $ok = substr($s->error_log, $from) =~ /\] \d+#\d+: reconfiguring/
              && $check->();
        last if $ok || !alive();
        sleep 0.02;
    }
    return $ok;
}

my $answers = 'linegate_http_answers_total{api="line_request",'
            . 'class="2xx"}';
my $w = $l->workspace('org_single');
my $id = $l->created($w, channelType => 'email', email => 'a@example.com');

subtest 'counted in one process' => sub {
    is($l->get($w, $id)->res->code, 200, 'read');
    like(scrape()->body, qr/^\Q$answers\E 1$/m, 'counted');
};

subtest 'a reload without any linegate_api' => sub {
    # the old configuration's /metrics, on the kept connection: nothing
    # to show once the zone is gone
    ok(reload(0, sub { scrape()->body !~ /^linegate_/m }),
       'reloaded: no zone, no series shown');
    ok(alive(), 'nginx alive');
    is($l->get($w, $id)->res->code, 200,
       'a read on the kept connection answers');
    sleep 1.5;    # Redis's keepalive (1 s) counts too
    ok(alive(), 'nginx alive after the answer (counted nowhere)');
};

# nginx gives the new cycle no connections: the kept one may be closed
# when the cycle wants one (nginx "reusing connections"), so it is used
# at once, and the process watched after
subtest 'a reload back to the APIs' => sub {
    ok(reload(1, sub { scrape()->body =~ /^linegate_metrics_dropped_total/m }),
       'reloaded: a new zone');
    is($l->get($w, $id)->res->code, 200, 'a read answers');
    like(scrape()->body, qr/^\Q$answers\E 1$/m,
         'counted in the new zone, once');
    sleep 1.5;    # Redis's keepalive sets the backlog gauge, by its memo
    ok(alive(), 'nginx alive');
};

# The same for linegate_limit's local fallback: its state lives in a
# zone only while some location falls back to it. A limited request on
# a kept connection, answered by Redis, noted Redis's answer in the old
# cycle's zone after a reload without that fallback (a crash).
subtest 'a reload without linegate_limit_on_error local' => sub {
    my $zone = 'linegate_limit_zone lz key=$remote_addr rate=100r/s;';
    my $local = 'location = /local { linegate_limit zone=lz; '
              . 'linegate_limit_on_error local share=2; '
              . 'try_files /nothing-here =404; }';
    my $open = 'location = /local { linegate_limit zone=lz; '
             . 'try_files /nothing-here =404; }';
    my $t = LG::Stack->new(stub => 0, MASTER_PROCESS => 'off', WORKERS => 1,
                           HTTP_EXTRA => $zone, SERVER_EXTRA => $local)->start;
    my $get = sub { $t->ua->get($t->url('/local'))->res->code // 0 };
    is($get->(), 404, 'limited, passed, on the kept connection');

    my $from = length $t->error_log;
    open my $fh, '>', $t->prefix . '/nginx.conf' or die $!;
    print $fh $t->render(MASTER_PROCESS => 'off', WORKERS => 1,
                         HTTP_EXTRA => $zone, SERVER_EXTRA => $open);
    close $fh;
    kill 'HUP', $t->{pids}{nginx};
    my $done = 0;
    for (1 .. 250) {
        $done = substr($t->error_log, $from) =~ /\] \d+#\d+: reconfiguring/;
        last if $done;
        sleep 0.02;
    }
    ok($done, 'reloaded');
    sleep 0.2;    # the new cycle built after the line
    is($get->(), 404, 'limited again on the kept connection');
    sleep 0.2;
    ok(waitpid($t->{pids}{nginx}, WNOHANG) == 0, 'nginx alive');
    $t->stop;
};

done_testing;
