package LG::Redis;

# Redis.pm for the harness ($s->redis, and each node of LG::RedisCluster):
# a command with an undef argument dies here, naming the command and the
# argument, and is not sent. Redis.pm would send the undef as a null
# bulk ("$-1"), which Redis answers with "ERR Protocol error: invalid
# bulk length" and then closes the connection: a helper given an undef
# (a setup step that failed, its id never found) read as a broken
# socket, and every later command of the file failed with it (t/235 once
# died so on a loaded Redis Cluster pass).

use strict;
use warnings;

use Carp qw(croak);
use Redis;

our @ISA = ('Redis');
# the error names the line of the test (or helper) that sent the command,
# not one of Redis.pm's or LG::RedisCluster's
our @CARP_NOT = ('Redis', 'LG::RedisCluster');

# croaks unless every argument of $cmd is defined
sub check_args {
    my ($cmd, @args) = @_;
    for my $i (0 .. $#args) {
        next if defined $args[$i];
        croak "[$cmd] argument " . ($i + 1) . ' is undef: not sent (Redis '
              . 'would answer "invalid bulk length" and close the '
              . 'connection)';
    }
    return 1;
}

# every command of Redis.pm is written by __send_command
sub __send_command {
    my ($self, $cmd, @args) = @_;
    check_args($cmd, @args);
    return $self->SUPER::__send_command($cmd, @args);
}

1;
