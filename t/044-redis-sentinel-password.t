# Sentinels that require a password (requirepass in sentinel.conf; here
# the default user's ACL password, set at run time): the workers find the
# master with the password of linegate_redis_sentinel_password_file, the
# _file form of sentinel_password= that keeps it out of nginx -T (t/012
# checks nginx -t and nginx -T).
use strict;
use warnings;
use lib 't/lib';

use Test::More;
use Redis;
use Time::HiRes qw(time sleep);
use LG::Stack;

my $s = LG::Stack->new(redis => 'sentinel', stub => 0)->start;
ok($s->wait_sentinels_ready(30), 'the sentinels are ready');

my $pw = LG::Stack::random_token(24);
my $file = $s->dir . '/sentinel-password';
open my $fh, '>', $file or die "$file: $!";
print $fh "$pw\n";
close $fh;
chmod 0644, $file;

# from now on a sentinel answers NOAUTH to a client without the password
for my $port ($s->sentinel_ports) {
    my $r = Redis->new(server => "127.0.0.1:$port", reconnect => 0);
    $r->acl('SETUSER', 'default', 'resetpass', ">$pw");
    $r->quit;
}

# the stack's nginx reloaded on its configuration, $extra after
# linegate_redis; the error log's length before
sub reload {
    my ($extra) = @_;
    my $conf = $s->render;
    $conf =~ s{^(\s*linegate_redis [^;]*;)}{$1\n    $extra}m if $extra;
    open my $fh, '>', $s->prefix . '/nginx.conf' or die "nginx.conf: $!";
    print $fh $conf;
    close $fh;
    my $from = length $s->error_log;
    kill 'HUP', $s->{pids}{nginx};
    return $from;
}

subtest 'without the password: refused by every sentinel' => sub {
    my $from = reload('');
    my $until = time + 15;
    my $log = '';
    until ($log =~ /no sentinel named the master "lgmaster"/
           || time > $until)
    {
        sleep 0.1;
        $log = substr $s->error_log, $from;
    }
    like($log, qr/redis sentinel [\d.:]+: no master "lgmaster": NOAUTH/,
         'NOAUTH');
    like($log, qr/no sentinel named the master "lgmaster"/,
         'no master found');
};

subtest 'the password of the file: the master found' => sub {
    my $from = reload("linegate_redis_sentinel_password_file $file;");
    ok($s->wait_redis_connected($from, 15),
       'every worker connected to the master');
    my $log = substr $s->error_log, $from;
    like($log, qr/redis sentinel 127\.0\.0\.1:\d+: master "lgmaster" is /,
         'named by a sentinel');
    unlike($s->error_log, qr/\Q$pw\E/, 'the password never logged');
};

done_testing;
