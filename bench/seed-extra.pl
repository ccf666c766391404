#!/usr/bin/perl
# What linegate's benchmark needs on top of the peers' seed
# (shared/bench/peers/seed.pl, run first: it flushes and writes keys.txt,
# ids.txt and creds.txt into DIR). Layout: docs/data-model.md.
#
#   seed-extra.pl --port 6391 --data DIR [--host 127.0.0.1]
#       [--index]                  lg:{ws:W}:lines zset + lg:line:<id> of
#                                  every seeded line request (by-user lists)
#       [--key-entries]            the entry lg:{ws:W}:keys <key id> ->
#                                  sha256hex of every seeded API key (and of
#                                  the write workspaces' keys): linegate
#                                  accepts a key only while its workspace
#                                  lists it (docs/data-model.md); the peers'
#                                  seed writes the lookup lg:apikey only
#       [--clerk ISSUER]           an RS256 key pair (DIR/clerk/, made once)
#                                  and one Clerk session token per seeded
#                                  workspace: DIR/clerk.txt, line i = the
#                                  token of workspace i (its org id)
#       [--write-workspaces N]     N fresh workspaces on the growth plan for
#                                  the write path (2 included phone lines
#                                  each): key of workspace i is
#                                  tuco_benchwrite<%08d i><22 x>; DIR/write.txt
#                                  holds N
#       [--inventory-extra N]      N more numbers in lg:{fleet}:inventory (confirm)
#       [--stripe-stub URL|canned] a Stripe customer with a card per bench
#                                  account, made through the stub's control
#                                  API, and stripeCustomerId on the account
#
# Deterministic except the tokens' times (iat = now, exp = now + 1 day).

use strict;
use warnings;
use Digest::SHA qw(sha256_hex);
use Getopt::Long;
use IO::Socket::INET;
use HTTP::Tiny;

my %o = (host => '127.0.0.1', port => 6391);
GetOptions(\%o, 'host=s', 'port=i', 'data=s', 'index', 'key-entries',
           'clerk=s', 'write-workspaces=i', 'inventory-extra=i',
           'stripe-stub=s')
    or die "usage: $0 --port N --data DIR [--index] [--clerk ISSUER] ...\n";
die "--data DIR is required\n" unless $o{data};

# ------------------------------------------------------------------ RESP

my $sock = IO::Socket::INET->new(PeerAddr => $o{host}, PeerPort => $o{port},
                                 Proto => 'tcp')
    or die "redis $o{host}:$o{port}: $!\n";
binmode $sock;

sub resp {
    my $s = '*' . scalar(@_) . "\r\n";
    $s .= '$' . length($_) . "\r\n$_\r\n" for @_;
    return $s;
}

sub read_line {
    my $l = <$sock>;
    die "redis: connection closed\n" unless defined $l;
    $l =~ s/\r\n\z//;
    return $l;
}

sub read_reply {
    my $l = read_line();
    my ($t, $v) = (substr($l, 0, 1), substr($l, 1));
    return $v if $t eq '+' or $t eq ':';
    die "redis: $v\n" if $t eq '-';
    if ($t eq '$') {
        return undef if $v < 0;
        my $buf = '';
        while (length($buf) < $v + 2) {
            my $n = read $sock, $buf, $v + 2 - length($buf), length($buf);
            die "redis: short read\n" unless $n;
        }
        return substr($buf, 0, $v);
    }
    if ($t eq '*') {
        return undef if $v < 0;
        return [map { read_reply() } 1 .. $v];
    }
    die "redis: unexpected reply '$l'\n";
}

# run commands pipelined (in batches), return their replies
sub pipeline {
    my @cmds = @_;
    my @out;
    while (my @batch = splice @cmds, 0, 2000) {
        print $sock join('', map { resp(@$_) } @batch);
        push @out, read_reply() for @batch;
    }
    return @out;
}

sub lines_of {
    my $f = "$o{data}/$_[0]";
    open my $fh, '<', $f or die "$f: $!\n";
    chomp(my @l = grep { /\S/ } <$fh>);
    return @l;
}

sub write_file {
    my ($name, @lines) = @_;
    open my $fh, '>', "$o{data}/$name" or die "$o{data}/$name: $!\n";
    print $fh "$_\n" for @lines;
    close $fh or die "$o{data}/$name: $!\n";
}

# ------------------------------------------------------------------ seeded workspaces

# a key's entry in its workspace's :keys, as the operator API writes it
# (a key id, deterministic here, -> the key's digest)
sub key_entry {
    my ($ws, $key) = @_;
    my $digest = sha256_hex($key);
    return ['HSET', "lg:{ws:$ws}:keys",
            'key_' . substr(sha256_hex("bench:$digest"), 0, 16), $digest];
}

my (@keys, @ids, @ws);
if ($o{index} || $o{'key-entries'} || defined $o{clerk}) {
    @keys = lines_of('keys.txt');
    @ids = map { [split ' '] } lines_of('ids.txt');
    @ws = pipeline(map { ['GET', 'lg:apikey:' . sha256_hex($_)] } @keys);
    for my $i (0 .. $#ws) {
        die "workspace of key $i not in Redis: seed.pl first\n" unless defined $ws[$i];
    }
}

if ($o{'key-entries'}) {
    pipeline(map { key_entry($ws[$_], $keys[$_]) } 0 .. $#ws);
    print STDERR "seed-extra: ", scalar(@ws), " key entries\n";
}

if ($o{index}) {
    my @q;
    for my $i (0 .. $#ws) {
        push @q, map { ['HGET', "lg:{ws:$ws[$i]}:lr:$_", 'createdAt'] } @{ $ids[$i] };
    }
    my @created = pipeline(@q);
    my (@cmds, $n);
    $n = 0;
    for my $i (0 .. $#ws) {
        my @z;
        for my $id (@{ $ids[$i] }) {
            my $c = $created[$n++] // die "lr $id missing\n";
            my ($y, $mo, $d, $h, $mi, $s, $ms) =
                $c =~ /^(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)\.(\d{3})Z$/
                or die "bad createdAt $c\n";
            require Time::Local;
            my $t = Time::Local::timegm($s, $mi, $h, $d, $mo - 1, $y);
            push @z, $t * 1000 + $ms, $id;
            push @cmds, ['SET', "lg:line:$id", $ws[$i]];
        }
        push @cmds, ['ZADD', "lg:{ws:$ws[$i]}:lines", @z];
    }
    pipeline(@cmds);
    print STDERR "seed-extra: indexed ", scalar(@ws), " workspaces\n";
}

# ------------------------------------------------------------------ Clerk

if (defined $o{clerk}) {
    require Crypt::JWT;
    my $dir = "$o{data}/clerk";
    mkdir $dir unless -d $dir;
    unless (-s "$dir/key.pem" && -s "$dir/pub.pem") {
        system('openssl', 'genpkey', '-algorithm', 'RSA', '-quiet', '-pkeyopt',
               'rsa_keygen_bits:2048', '-out', "$dir/key.pem") == 0
            or die "openssl genpkey failed\n";
        system('openssl', 'pkey', '-in', "$dir/key.pem", '-pubout',
               '-out', "$dir/pub.pem") == 0
            or die "openssl pkey -pubout failed\n";
    }
    open my $fh, '<', "$dir/key.pem" or die "$dir/key.pem: $!\n";
    my $pem = do { local $/; <$fh> };
    close $fh;
    my $now = time;
    my @tokens;
    for my $i (0 .. $#ws) {
        # a Clerk v2 session token with the workspace as active organization
        push @tokens, Crypt::JWT::encode_jwt(
            alg => 'RS256', key => \$pem,
            extra_headers => { kid => 'ins_bench', typ => 'JWT' },
            payload => {
                azp => 'http://localhost:3000', iss => $o{clerk},
                sub => sprintf('user_bench%06d', $i),
                sid => sprintf('sess_bench%06d', $i),
                iat => $now, nbf => $now - 10, exp => $now + 86400,
                v => 2, o => { id => $ws[$i], rol => 'admin',
                               slg => "bench-$i" },
            });
    }
    write_file('clerk.txt', @tokens);
    print STDERR "seed-extra: ", scalar(@tokens), " Clerk tokens\n";
}

# ------------------------------------------------------------------ write path

if (my $n = $o{'write-workspaces'}) {
    my @cmds;
    for my $i (0 .. $n - 1) {
        my $key = sprintf('tuco_benchwrite%08d%s', $i, 'x' x 22);
        my $ws = sprintf('org_2benchwrite%08d', $i);
        push @cmds, ['SET', 'lg:apikey:' . sha256_hex($key), $ws],
            key_entry($ws, $key),
            ['HSET', "lg:{ws:$ws}", 'plan', 'growth',
             'subscriptionStatus', 'active',
             'stripeCustomerId', sprintf('cus_benchwrite%08d', $i)];
        if (@cmds >= 20000) { pipeline(@cmds); @cmds = () }
    }
    pipeline(@cmds);
    write_file('write.txt', $n);
    print STDERR "seed-extra: $n write workspaces\n";
}

# linegate's inventory is under the fleet's hash tag (docs/data-model.md):
# the peers' numbers, as the same set
pipeline(['SUNIONSTORE', 'lg:{fleet}:inventory', 'lg:inventory']);

if (my $n = $o{'inventory-extra'}) {
    my @nums = map { sprintf('+1628%07d', $_) } 0 .. $n - 1;
    my @cmds;
    push @cmds, ['SADD', 'lg:{fleet}:inventory', splice(@nums, 0, 1000)] while @nums;
    pipeline(@cmds);
    print STDERR "seed-extra: $n more inventory numbers\n";
}

# ------------------------------------------------------------------ Stripe customers

if (my $url = $o{'stripe-stub'}) {
    my @creds = lines_of('creds.txt');
    my @accts = pipeline(map { ['HGET', 'lg:sbkey:' . (split ' ')[0], 'account'] } @creds);
    my $http = HTTP::Tiny->new(keep_alive => 1, timeout => 10);
    my @cmds;
    for my $a (@accts) {
        die "account of a credential missing\n" unless defined $a;
        (my $cus = "cus_$a") =~ s/acct_//;
        # canned answers (bench/linegate.conf.in) know every customer
        if ($url eq 'canned') {
            push @cmds, ['HSET', "lg:{acct:$a}", 'stripeCustomerId', $cus];
            next;
        }
        my $r = $http->post("$url/_stub/customers", {
            headers => { 'Content-Type' => 'application/json' },
            content => qq({"id":"$cus","card":true,"email":"$a\@bench.test"}) });
        die "stub: POST /_stub/customers: $r->{status} $r->{content}\n"
            unless $r->{success};
        push @cmds, ['HSET', "lg:{acct:$a}", 'stripeCustomerId', $cus];
    }
    pipeline(@cmds);
    print STDERR "seed-extra: ", scalar(@accts), " Stripe customers with a card\n";
}

close $sock;
