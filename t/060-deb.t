# The Debian package (make deb): installed with apt-get into the system's
# nginx, it puts the module and its load snippet where Debian's nginx
# modules go and enables it; the packaged nginx, loading it through
# /etc/nginx/modules-enabled/, passes nginx -t and, started by hand (no
# service) with conf/production.conf.example, serves requests that need
# Redis and Stripe (the stub); purged, it leaves nothing behind and the
# system's nginx -t still passes.
#
# Changes the system (installs, then purges, the package): runs only as
# root with apt-get, and only when the package is not installed already.
# LG_DEB=<file> tests that package; otherwise one is built with make deb
# in a temporary directory.
use strict;
use warnings;
use lib 't/lib';

use Test::More;
use File::Temp qw(tempdir);
use LG::Stack;
use LG::Production;
use LG::Lines ();

my $PKG = 'libnginx-mod-http-linegate';
my $SO = '/usr/lib/nginx/modules/ngx_http_linegate_module.so';
my $AVAILABLE = '/usr/share/nginx/modules-available/mod-http-linegate.conf';
my $ENABLED = '/etc/nginx/modules-enabled/50-mod-http-linegate.conf';
my $NGINX = '/usr/sbin/nginx';

sub have { return !system "command -v $_[0] >/dev/null 2>&1" }

plan skip_all => 'installs a package into the system: needs root' if $> != 0;
plan skip_all => 'needs apt-get and dpkg'
    unless have('apt-get') && have('dpkg');
plan skip_all => "needs the packaged nginx ($NGINX)" unless -x $NGINX;
plan skip_all => 'needs dh_nginx (nginx-dev) and dpkg-buildpackage to build'
    unless $ENV{LG_DEB} || (have('dh_nginx') && have('dpkg-buildpackage'));

# one run at a time on this machine (several worktrees may run the suite
# at once): the others wait here
use Fcntl qw(:flock);
open my $lock, '>', '/tmp/linegate-060-deb.lock' or die "lock: $!";
flock $lock, LOCK_EX or die "flock: $!";

sub installed {
    my $s = qx{dpkg-query -W -f='\${Status} \${Version}' $PKG 2>/dev/null};
    return $s =~ /^install ok installed (\S+)/ ? $1 : undef;
}

plan skip_all => "$PKG is installed already (purge it to run this test)"
    if installed() || -e $SO;

# every listener on the web ports, and the service's pid file: the
# package's scripts must not start a service (and we start none)
sub web_listeners {
    return join "\n", sort grep { /:(?:80|443)\s/ } split /\n/,
        qx{ss -Hltnp 2>/dev/null};
}
my $listeners_before = web_listeners();
my $pidfile_before = -e '/run/nginx.pid';

# nginx -t of the system's configuration: it leaves an empty pid file
# (nginx checks it can write it), removed unless it was there before
sub system_nginx_t {
    my @r = run("$NGINX -t 2>&1");
    unlink '/run/nginx.pid' if !$pidfile_before && -z '/run/nginx.pid';
    return @r;
}

my ($rc, $out) = system_nginx_t();
plan skip_all => "the system's nginx -t fails before the test:\n$out" if $rc;

my $tmp = tempdir('linegate-deb-XXXXXX', TMPDIR => 1, CLEANUP => 1);
chmod 0755, $tmp;

sub run {
    my ($cmd) = @_;
    my $out = qx{$cmd};
    return ($? >> 8, $out);
}

sub apt {
    my ($args) = @_;
    return run('DEBIAN_FRONTEND=noninteractive apt-get -y -q '
               . '-o DPkg::Lock::Timeout=300 ' . $args . ' 2>&1');
}

# the package, built from this tree unless given
my $deb = $ENV{LG_DEB};
if (!$deb) {
    ($rc, $out) =
        run("make -s -C '$LG::Stack::ROOT' deb BUILD=$tmp/build 2>&1");
    is($rc, 0, 'make deb') or diag $out;
    ($deb) = glob "$tmp/build/deb/${PKG}_*.deb";
}
ok($deb && -f $deb, 'the package file') or BAIL_OUT('no package');
like($deb, qr{/\Q$PKG\E_[0-9][^_]*_[a-z0-9]+\.deb$},
     "named ${PKG}_<version>_<arch>.deb");
my ($version) = $deb =~ /_([^_]+)_[^_]+\.deb$/;

my $ours;    # installed by this test: purged at the end, whatever happens
END { local $?; apt("purge $PKG") if $ours && installed() }  # keeps $?

subtest 'apt-get install' => sub {
    ($rc, $out) = apt("install '$deb'");
    is($rc, 0, 'apt-get install -y ./<deb>') or diag $out;
    $ours = 1;
    is(installed(), $version, "$PKG $version installed");

    ok(-f $SO, "the module: $SO");
    is(LG::Stack::_slurp($AVAILABLE),
       "load_module modules/ngx_http_linegate_module.so;\n",
       "the load snippet: $AVAILABLE");
    is(readlink($ENABLED), $AVAILABLE, "enabled: $ENABLED");

    my $doc = "/usr/share/doc/$PKG";
    ok(-f "$doc/examples/production.conf.example", 'the example');
    ok(-f "$doc/deploy.md.gz" || -f "$doc/deploy.md", 'docs/deploy.md');
    ok(-f "$doc/copyright", 'copyright');

    my $deps = qx{dpkg-query -W -f='\${Depends}' $PKG};
    like($deps, qr/\bnginx-abi-[\d.]+-\d+\b/, 'depends on the nginx ABI');
    like($deps, qr/\blibhiredis/, 'and on libhiredis');

    ($rc, $out) = system_nginx_t();
    is($rc, 0, "the system's nginx -t, with the module enabled") or diag $out;
    is(web_listeners(), $listeners_before, 'no service started (80, 443)');
    is(-e '/run/nginx.pid', $pidfile_before, 'no /run/nginx.pid');
};

subtest 'the packaged nginx serves the example through modules-enabled' => sub {
    # Redis and the Stripe stub of the harness; its own nginx, the system's
    # (whatever LG_NGINX the suite runs with), loads the installed module
    local $ENV{LG_MODULE} = $SO;
    local $ENV{LG_NGINX} = $NGINX;
    my $s = LG::Stack->new->start;

    my $pw = LG::Production::require_password($s,
                                              LG::Stack::random_token(24));
    my $p = LG::Production->new($s, nginx => $NGINX, stripe => 1,
        redis_password => $pw,
        load => 'include /etc/nginx/modules-enabled/*.conf;');
    ($rc, $out) = $p->nginx_t;
    is($rc, 0, 'nginx -t: modules-enabled and the example') or diag $out;

    $p->start;
    my $maps = LG::Stack::_slurp('/proc/' . $p->pid . '/maps');
    like($maps, qr{\Q$SO\E}, 'the master mapped the installed module');

    my $tx = $p->op(PUT => '/workspaces/org_deb',
                    {plan => 'growth', subscriptionStatus => 'active',
                     stripeCustomerId => 'cus_org_deb'});
    is($tx->res->code, 200, 'operator PUT (Redis), over TLS')
        or diag $tx->res->body, $p->error_log;
    $tx = $p->op(POST => '/workspaces/org_deb/keys');
    is($tx->res->code, 201, 'an API key (Redis)');
    my $key = eval { $tx->res->json->{key} } // '';

    ok($s->stub(POST => '/_stub/customers',
                {id => 'cus_org_deb', card => 1})->res->is_success,
       'stub customer');
    $tx = $p->ua->post($p->url('/api/line-requests')
        => {Authorization => "Bearer $key"}
        => json => LG::Lines::body(channelType => 'email',
                                   email => 'ada@example.com'));
    is($tx->res->code, 201, 'a paid line request (Redis and Stripe)')
        or diag $tx->res->body, $p->error_log;
    my $b = eval { $tx->res->json } // {};
    is($b->{status}, 'awaiting_payment', 'awaiting_payment');
    like($b->{invoiceId} // '', qr/^in_/, 'with a Stripe invoice');

    my $id = $b->{line}{_id} // 'none';
    $tx = $p->ua->get($p->url("/api/line-requests/$id")
                      => {Authorization => "Bearer $key"});
    is($tx->res->code, 200, 'read back');

    $tx = $p->ua->get($p->url('/metrics'));
    like($tx->res->body, qr/^linegate_http_answers_total\{/m, 'metrics');

    my $pid = $p->pid;
    $p->stop;
    ok(!kill(0, $pid), "stopped by pid ($pid)");
    $s->stop;
};

subtest 'apt-get purge' => sub {
    ($rc, $out) = apt("purge $PKG");
    is($rc, 0, "apt-get purge -y $PKG") or diag $out;
    is(installed(), undef, 'not installed');
    $ours = 0 unless installed();

    ok(!-e $SO, 'the module is gone');
    ok(!-e $AVAILABLE, 'the load snippet is gone');
    ok(!-e $ENABLED && !-l $ENABLED, 'the link is gone');
    ok(!-e "$ENABLED.removed" && !-l "$ENABLED.removed", 'no .removed link');
    ok(!-e "/usr/share/doc/$PKG", 'the docs are gone');

    ($rc, $out) = system_nginx_t();
    is($rc, 0, "the system's nginx -t without it") or diag $out;

    # the example now names directives nobody knows (no stack needed:
    # nginx stops at the first one)
    LG::Production::_spew("$tmp/jwks.json", "{}\n");
    my $p = LG::Production->new(NoStack->new(jwks_path => "$tmp/jwks.json"),
        nginx => $NGINX,
        load => 'include /etc/nginx/modules-enabled/*.conf;');
    ($rc, $out) = $p->nginx_t;
    isnt($rc, 0, 'the example without the module: refused');
    like($out, qr/unknown directive "linegate_/, '... unknown directive');

    is(web_listeners(), $listeners_before, 'no service left (80, 443)');
    is(-e '/run/nginx.pid', $pidfile_before, 'no /run/nginx.pid');
};

done_testing;

# what LG::Production asks a stack for, without one
package NoStack;

sub new {
    my ($class, %o) = @_;
    return bless {redis_port => 1, stub_port => 1,
                  operator_token => 'x' x 32, webhook_secret => 'whsec_x',
                  issuer => 'https://clerk.example.com', %o}, $class;
}

sub AUTOLOAD {
    our $AUTOLOAD;
    (my $name = $AUTOLOAD) =~ s/.*:://;
    return if $name eq 'DESTROY';
    return $_[0]{$name};
}
