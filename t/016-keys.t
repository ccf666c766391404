# Key names in one place (docs/data-model.md, "Key names: keys.c"):
#
#  (a) no C file but src/ngx_http_linegate_keys.c spells a key name (a
#      C string starting "lg:);
#  (b) every script under src/lua/ takes its keys in KEYS[] (its header
#      names KEYS[1]);
#  (c) the key names a script builds from data (a workspace read from an
#      index, a tenant read from a lookup) are the known ones below, each
#      in docs/data-model.md's "Scripts and slots" table for issue 10: a
#      new one fails, and so does an entry that no longer occurs (the list
#      only shrinks);
#  (d) the Provisioning API's scripts (pv_*), the Lines API's (lr_*)
#      and the webhooks' (wh_*), with their includes, derive no key from
#      another (`KEYS[1] .. ':prov'`): every key a step touches is in
#      its KEYS[], so that a cluster checks them all before the step
#      runs (a slot in migration: TRYAGAIN, never a step cut half-way by
#      a key that moved). One exception, docs/data-model.md ("Scripts
#      and slots"): the requests lr_create and lr_list read from the
#      workspace's index, named by lg_lr_key() (include/lr_here.lua,
#      its one derivation), which on a cluster they check first.
#  (e) the keys the Lines API's and the webhooks' scripts (lr_*, wh_*)
#      declare in their headers ("KEYS[n] lg:...") are of one slot: one
#      hash tag, and no key without a tag (the invoice's webhook index
#      lg:invoice:<in> is written by nginx in a step of its own, before
#      the script that makes a request name the invoice), but for the
#      streams below, whose move under the tenant's tag is another step
#      of issue 10.
#
# No nginx, no Redis: runs in a second.
use strict;
use warnings;
use lib 't/lib';

use Test::More;
use LG::Stack;

my $root = $LG::Stack::ROOT;

# (e) keys of another slot a script may still declare (issue 10's
# stream step): allowed, not required
my %stream = map { $_ => 1 } qw(lg:provisioning lg:{fleet}:reconcile);

# the slot of a declared key: its hash tag, else the key itself
sub slot_of {
    my ($key) = @_;
    return $key =~ /\{([^}]*)\}/ ? "{$1}" : $key;
}

# script => Lua lines (comments aside) that name a key from data
my %derived = (
    'op_key_revoke.lua'      => 1,    # the channel lg:keys:revoked (not
                                      # a key; keys.c's name, t/186)
);

# (d) the one derivation left in the lr_/wh_/pv_ scripts: lg_lr_key(),
# a request named by the workspace's index, and the scripts allowed to
# call it, which walk the index and on a cluster first check that every
# request it names is on their node (lg_lr_here: TRYAGAIN before any
# write, never "gone" for a request not yet moved)
my %derives = ('include/lr_here.lua' => 1);
# (lr_here's own check calls it too)
my %walks   = map { $_ => 1 }
              qw(lr_create.lua lr_list.lua include/lr_here.lua);

sub slurp {
    my ($f) = @_;
    open my $fh, '<', $f or die "$f: $!";
    local $/;
    return scalar <$fh>;
}

# (a)
opendir my $dh, "$root/src" or die "src: $!";
my @c = sort grep { /^ngx_http_linegate_\w+\.[ch]$/ } readdir $dh;
closedir $dh;

for my $f (grep { !/^ngx_http_linegate_keys\.[ch]$/ } @c) {
    my @hits = grep { /"lg:/ } split /\n/, slurp("$root/src/$f");
    is(scalar @hits, 0, "$f names no key (keys.c does)")
        or diag join "\n", @hits;
}

# (b), (c)
my @lua = map { s{^\Q$root\E/src/lua/}{}r }
          sort(glob("$root/src/lua/*.lua"),
               glob("$root/src/lua/include/*.lua"));
ok(scalar @lua > 20, 'scripts found');

for my $f (@lua) {
    my $src = slurp("$root/src/lua/$f");

    like($src, qr/KEYS\[1\]/, "$f: its keys in KEYS[]")
        unless $f =~ m{^include/};

    # (d): a key suffix appended to a name (`.. ':lr:'`; `.. ':' ..`
    # joins a value, "W:<id>", and is no key)
    if ($f =~ m{^(?:include/)?(?:pv|lr|wh)_}) {
        my @code = grep { !/^\s*--/ } split /\n/, $src;
        my @derived = grep { /\.\.\s*':\w/ } @code;
        is(scalar @derived, $derives{$f} // 0,
           "$f: no key derived from another")
            or diag join "\n", @derived;

        my @named = grep { /\blg_lr_key\(/ && !/^local function/ } @code;
        ok(!@named || $walks{$f}, "$f: names no request from data")
            or diag join "\n", @named;
    }

    # (e): the header's declared keys, comment lines joined
    if ($f =~ /^(?:lr|wh)_/) {
        my $head = join ' ', map { s/^\s*--\s?//r }
                             grep { /^\s*--/ } split /\n/, $src;
        my %slots;
        while ($head =~ /KEYS\[\d+\]\s+(lg:[^\s,()]+)/g) {
            my $key = $1;
            next if $stream{$key};
            push @{ $slots{ slot_of($key) } }, $key;
        }
        ok(keys %slots <= 1, "$f: its keys in one slot")
            or diag join "\n", map { "$_: @{ $slots{$_} }" } sort keys %slots;
    }

    my $n = grep { !/^\s*--/ && /lg:/ } split /\n/, $src;
    is($n, $derived{$f} // 0, "$f: key names built from data")
        or diag "a new one is issue 10's: add it to docs/data-model.md "
              . "and to this table, or name it in KEYS[]";
}

done_testing;
