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
#      and slots"): the requests lr_create reads from the workspace's
#      indexes, named by lg_lr_key() (include/lr_here.lua, its one
#      derivation), which on a cluster it checks first (lr_list walked
#      :lines too until 2026-11-29; by-user reads it in plain commands).
#  (e) the keys the Lines API's and the webhooks' scripts (lr_*, wh_*)
#      declare in their headers ("KEYS[n] lg:...") are of one slot: one
#      hash tag, and no key without a tag (the invoice's webhook index
#      lg:invoice:<in> is written by nginx in a step of its own, before
#      the script that makes a request name the invoice), but for the
#      streams below, whose move under the tenant's tag is another step
#      of issue 10.
#  (f) no script gives redis.call()/pcall() a key built from a KEYS[]
#      by string operations (cut, joined: an undeclared key), but for
#      (d)'s lg_lr_key() in the scripts whose header says so.
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
              qw(lr_create.lua include/lr_here.lua);

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

# (f) no script names a key by cutting or joining KEYS[] (`string.sub(
#     KEYS[4], ...) .. other`): a redis.call()/pcall() argument built by
#     a string operation from a KEYS[] (or from a variable, a function's
#     parameter or a function's answer that holds one) is a key name made
#     outside keys.c, undeclared, which a cluster never checks and a new
#     key layout silently breaks. pv_settle built its other reason's
#     marker that way until its KEYS[6]. The one exception is (d)'s:
#     lg_lr_key(), in the scripts that walk the workspace's index and say
#     so in their header ("derived from KEYS[1]").
#     The scripts are read as Redis runs them, their includes pasted in.

# a script's code without comments nor the text of its strings
sub lua_code {
    my ($src) = @_;
    my $out = '';
    my $i = 0;
    my $n = length $src;
    while ($i < $n) {
        my $c = substr $src, $i, 1;
        if ($c eq '-' && substr($src, $i, 2) eq '--') {
            $i++ while $i < $n && substr($src, $i, 1) ne "\n";
            next;
        }
        if ($c eq "'" || $c eq '"') {
            $out .= $c;
            $i++;
            while ($i < $n && substr($src, $i, 1) ne $c) {
                $i++ if substr($src, $i, 1) eq '\\';
                $i++;
            }
            $out .= $c;
            $i++;
            next;
        }
        $out .= $c;
        $i++;
    }
    return $out;
}

# the text inside the parenthesis opening at $pos, and where it ends
sub lua_paren {
    my ($code, $pos) = @_;
    my $depth = 0;
    for (my $i = $pos; $i < length $code; $i++) {
        my $c = substr $code, $i, 1;
        $depth++ if $c eq '(' || $c eq '{' || $c eq '[';
        $depth-- if $c eq ')' || $c eq '}' || $c eq ']';
        return (substr($code, $pos + 1, $i - $pos - 1), $i) if $depth == 0;
    }
    return (substr($code, $pos + 1), length $code);
}

# a list's top-level items
sub lua_items {
    my ($list) = @_;
    my (@items, $depth);
    my $cur = '';
    $depth = 0;
    for my $c (split //, $list) {
        $depth++ if $c =~ /[({\[]/;
        $depth-- if $c =~ /[)}\]]/;
        if ($c eq ',' && $depth == 0) {
            push @items, $cur;
            $cur = '';
            next;
        }
        $cur .= $c;
    }
    push @items, $cur if $cur =~ /\S/;
    return @items;
}

# an expression whose value a redis.call() read is data, not a key name
sub lua_no_calls {
    my ($e) = @_;
    while ($e =~ /\bredis\.p?call\s*\(/g) {
        my $open = pos($e) - 1;
        my (undef, $end) = lua_paren($e, $open);
        substr($e, $open, $end - $open + 1) = '(V)';
        pos($e) = $open;
    }
    return $e;
}

# a string operation: `..`, string.x(), s:x()
my $strop = qr/\.\.|\bstring\.\w+\s*\(
               |:\s*(?:sub|gsub|format|rep|lower|upper|match|gmatch
                      |reverse|byte)\s*\(/x;

# does an expression name one of the variables of $names
sub lua_refs {
    my ($e, $names) = @_;
    for my $v (keys %$names) {
        return 1 if $e =~ /(?<![\w.:])\Q$v\E\b/;
    }
    return 0;
}

# the redis.call()/pcall() arguments of a script made from its KEYS[]
sub lua_built_keys {
    my ($code, $allowed) = @_;
    my (%key, %built, %fn, %builds);

    # a function's parameters are its own: renamed <name>__<function>
    # within it, so that a pending or ws of one is not another's
    $code =~ s{^((?:local\s+)?function\s+(\w+)\s*\(([^)]*)\).*?^end\b)}{
        my ($span, $f) = ($1, $2);
        for my $p (grep { /^\w+$/ } map { s/\s//gr } split /,/, $3) {
            $span =~ s/(?<![\w.:])\Q$p\E\b/${p}__$f/g;
        }
        $span
    }gmse;

    # the top-level functions (the scripts' own start a line and end
    # with an "end" that does)
    while ($code =~ /^(?:local\s+)?function\s+(\w+)\s*\(([^)]*)\)
                     (.*?)^end\b/gmsx)
    {
        $fn{$1} = { params => [ map { s/\s//gr } split /,/, $2 ],
                    body => $3 };
    }

    # "a, b = x, y" (the right side up to its line's end, or further
    # while a parenthesis is open)
    my @assign;
    while ($code =~ /(?<![\w.=~<>])
                     ((?:[A-Za-z_]\w*\s*,\s*)*[A-Za-z_]\w*)\s*=(?!=)/gx)
    {
        my ($lhs, $at) = ($1, pos $code);
        my $rhs = '';
        my $depth = 0;
        for (my $i = $at; $i < length $code; $i++) {
            my $c = substr $code, $i, 1;
            $depth++ if $c =~ /[({\[]/;
            $depth-- if $c =~ /[)}\]]/;
            last if $c eq "\n" && $depth <= 0
                    && $rhs !~ /(?:\.\.|\band|\bor|,|=)\s*$/;
            $rhs .= $c;
        }
        next if $lhs =~ /^(?:local|function|end|if|then)$/;
        push @assign, [ [ map { s/\s//gr } split /,/, $lhs ],
                        lua_no_calls($rhs) ];
    }

    my $built_by = sub {
        my ($e) = @_;
        return 1 if lua_refs($e, \%built);
        for my $f (keys %builds) {
            return 1 if $e =~ /(?<![\w.:])\Q$f\E\s*\(/;
        }
        return 1 if $e =~ $strop
                    && ($e =~ /\bKEYS\s*\[/ || lua_refs($e, \%key));
        return 0;
    };
    my $a_key = sub {
        my ($e) = @_;
        return $e =~ /\bKEYS\s*\[/ || lua_refs($e, \%key);
    };

    for my $pass (1 .. 10) {
        my $was = join ',', sort(keys %key), '|', sort(keys %built),
                            '|', sort keys %builds;

        for my $a (@assign) {
            my ($lhs, $rhs) = @$a;
            # "a, b = x, y": a is x, b is y; "a, b = f()": both f()'s
            my @rhs = lua_items($rhs);
            my @pairs = @rhs == @$lhs
                        ? map { [ $lhs->[$_], $rhs[$_] ] } 0 .. $#rhs
                        : map { [ $_, $rhs ] } @$lhs;
            for my $p (@pairs) {
                if ($built_by->($p->[1])) {
                    $built{ $p->[0] } = 1;
                } elsif ($a_key->($p->[1])) {
                    $key{ $p->[0] } = 1;
                }
            }
        }

        for my $f (keys %fn) {
            while ($code =~ /(?<![\w.:])\Q$f\E\s*\(/g) {
                my ($args) = lua_paren($code, pos($code) - 1);
                my @args = lua_items(lua_no_calls($args));
                my @p = @{ $fn{$f}{params} };
                for my $i (0 .. $#p) {
                    next unless defined $args[$i];
                    if ($built_by->($args[$i])) {
                        $built{ $p[$i] } = 1;
                    } elsif ($a_key->($args[$i])) {
                        $key{ $p[$i] } = 1;
                    }
                }
            }
            next if $allowed->{$f};
            while ($fn{$f}{body} =~ /\breturn\b([^\n]*)/g) {
                $builds{$f} = 1 if $built_by->(lua_no_calls($1));
            }
        }

        my $now = join ',', sort(keys %key), '|', sort(keys %built),
                            '|', sort keys %builds;
        last if $now eq $was;
    }

    my @hits;
    while ($code =~ /\bredis\.p?call\s*\(/g) {
        my $at = pos $code;
        my ($args) = lua_paren($code, $at - 1);
        my $line = 1 + (() = substr($code, 0, $at) =~ /\n/g);
        for my $arg (lua_items($args)) {
            if ($built_by->(lua_no_calls($arg))) {
                push @hits, "line $line: " . ($arg =~ s/\s+/ /gr);
            }
        }
    }
    return @hits;
}

# (f), each script as Redis runs it
for my $f (grep { !m{^include/} } @lua) {
    my $src = slurp("$root/src/lua/$f");
    my $depth = 0;
    1 while $depth++ < 5
             && $src =~ s{^--#include ([a-z0-9_]+)[ \t]*$}{
                    slurp("$root/src/lua/include/$1.lua")
                }gme;

    # lg_lr_key(): (d)'s one derivation, declared by the script's header
    my %allowed;
    if ($walks{$f}) {
        my ($head) = $src =~ /\A((?:--[^\n]*\n)+)/;
        like($head // '', qr/derived from KEYS\[1\]/i,
             "$f: its header declares the keys derived from KEYS[1]");
        %allowed = (lg_lr_key => 1);
    }

    my @hits = lua_built_keys(lua_code($src), \%allowed);
    is(scalar @hits, 0, "$f: no key built from KEYS[] (declare it)")
        or diag join "\n", '(lines of the script, its includes '
                           . 'pasted; a parameter named <name>__<function>)',
                           @hits;
}

done_testing;
