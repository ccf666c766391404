# nginx's poll event module (`use poll;`, also /dev/poll and event ports)
# keeps a table of connections by fd (ngx_cycle->files), which a freed
# connection must leave. The Redis connection's cleanup once freed its
# nginx connection with fd -1: the table kept naming it under its old fd,
# and a later connection given that fd (a Redis reconnect that reused the
# number while nginx handed it another connection structure) had its
# events delivered to the freed one. Here: the worker's Redis connection
# is cut, then a client connection opened after it closes, so that the
# reconnect gets the Redis fd and the client's structure; decisions must
# still come from Redis, round after round, and no worker may crash.
use strict;
use warnings;
use lib 't/lib';

use Test::More;
use IO::Socket::INET;
use Mojo::UserAgent;
use Redis;
use Time::HiRes qw(sleep);
use LG::Stack;
use LG::Test qw(eventually);
use LG::Limit qw(hot_location_conf limit_status);

# the poll module is built only when asked for on Linux (Debian's nginx
# has none; make matrix's nginx has it: MATRIX_NGINX_FLAGS)
my $nginx = $ENV{LG_NGINX} // '/usr/sbin/nginx';
plan skip_all => "$nginx has no poll module (--with-poll_module)"
    unless `$nginx -V 2>&1` =~ /--with-poll_module/;

my $dir = LG::Test::public_dir('file.txt' => "ok\n");

my ($http, $server) = hot_location_conf($dir);

my $s = LG::Stack->new(
    stub => 0, api => 0, WORKERS => 1, EVENTS_EXTRA => 'use poll;',
    HTTP_EXTRA => $http, SERVER_EXTRA => $server)->start;

# each GET on a connection of its own, closed after it (as the held one
# is): on the stack's kept-alive one, the fault showed only as workers
# crashing (a new one answering each round), not in these assertions
my $i = 0;
sub status {
    return limit_status($s, '/hot/?k=' . ++$i, Mojo::UserAgent->new);
}

is(status(), '200 PASSED', 'decided in Redis');

for my $round (1 .. 5) {
    # a client connection opened after the Redis one: a higher fd
    my $h = IO::Socket::INET->new(PeerAddr => '127.0.0.1:' . $s->port)
        or die "connect: $!";
    print $h "GET /hot/?k=held$round HTTP/1.1\r\nHost: t\r\n\r\n";
    LG::Test::http_body($h);

    my $from = length $s->error_log;
    my $k = Redis->new(server => '127.0.0.1:' . $s->redis_port);
    ok($k->client('kill', 'type', 'normal') >= 1,
       "round $round: the worker's Redis connection cut");
    $k->quit;
    ok(eventually(sub {
        substr($s->error_log, $from) =~ /redis disconnected/
    }, 5), "round $round: the worker saw it");

    # freed after the Redis connection: its structure is the next taken
    close $h;
    sleep 0.05;

    ok(eventually(sub { status() eq '200 PASSED' }, 10),
       "round $round: reconnected, decided in Redis again");
    is(status(), '200 PASSED', "round $round: and the next");
}

done_testing;
