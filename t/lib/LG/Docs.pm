package LG::Docs;

# What the docs say, read back for comparison with the sources: the
# directives the module registers (src/*.c) and their entries in
# docs/directives.md, the nginx examples of docs/*.md and README.md, and
# the metric families of src/ngx_http_linegate_metrics.c and the table of
# docs/operator.md.
#
#   my $code = LG::Docs::directives_in_code();  # name => {context, min..}
#   my $doc  = LG::Docs::directives_in_docs();  # name => {context, ...}
#   for my $ex (LG::Docs::nginx_examples()) { $ex->{where}, $ex->{text} }

use strict;
use warnings;

use File::Basename qw(dirname);
use Cwd qw(abs_path);

our $ROOT = abs_path(dirname(__FILE__) . '/../../..');

sub _slurp {
    my ($path) = @_;
    open my $fh, '<', $path or die "$path: $!";
    local $/;
    return scalar <$fh>;
}

my %CONTEXT = (MAIN => 'http', SRV => 'server', LOC => 'location');

# each { ngx_string("linegate_..."), FLAGS, handler, conf, offset, post }
# of an ngx_command_t array: name => {context, min, max, flag, handler,
# field, post, file}
sub directives_in_code {
    my %d;
    for my $file (sort glob "$ROOT/src/*.c") {
        my $src = _slurp($file);
        while ($src =~ /\{\s*ngx_string\("(linegate_\w+)"\),\s*
                        (NGX_HTTP_[A-Z0-9_|\s]+?),\s*(\w+),\s*(\w+),\s*
                        (0|offsetof\([^)]*\)),\s*([^\s}]+)\s*\}/gx)
        {
            my ($name, $flags, $handler, $off, $field, $post) =
                ($1, $2, $3, $4, $5, $6);
            my @ctx = map { $CONTEXT{$_} }
                      $flags =~ /NGX_HTTP_(MAIN|SRV|LOC)_CONF/g;
            my @take = $flags =~ /NGX_CONF_TAKE(\d+)/g;
            my @n = map { split // } @take;
            my ($min, $max) = (1, 1);
            if (@n) {
                ($min, $max) = ((sort { $a <=> $b } @n)[0],
                                (sort { $b <=> $a } @n)[0]);
            }
            elsif ($flags =~ /NGX_CONF_1MORE/) {
                ($min, $max) = (1, undef);
            }
            $field = $field =~ /offsetof\(\w+,\s*(\w+)\)/ ? $1 : undef;
            (my $f = $file) =~ s{^\Q$ROOT\E/}{};
            $d{$name} = {context => join(', ', @ctx), min => $min,
                         max => $max,
                         flag => scalar($flags =~ /NGX_CONF_FLAG/),
                         handler => $handler, field => $field,
                         post => $post, file => $f};
        }
    }
    return \%d;
}

# the "### name[, name...]" entries of docs/directives.md with their
# Syntax (each form), Default and Context lines
sub directives_in_docs {
    my $md = _slurp("$ROOT/docs/directives.md");
    my %d;
    while ($md =~ /^\#\#\# (linegate_[\w, ]+)\n\n((?:    .*\n)+)/mg) {
        my ($heading, $block) = ($1, $2);
        my (%f, $key);
        for my $line (split /\n/, $block) {
            if ($line =~ /^\s{4}(Syntax|Default|Context):\s*(.*)$/) {
                $key = lc $1;
                push @{ $f{$key} }, $2;
            }
            elsif ($key && $line =~ /^\s+(\S.*)$/) {
                my $text = $1;
                # a form of its own, or the one before continued
                if ($key eq 'syntax' && $text =~ /^linegate_/) {
                    push @{ $f{$key} }, $text;
                }
                else {
                    $f{$key}[-1] .= " $text";
                }
            }
        }
        for my $name (split /,\s*/, $heading) {
            $d{$name} = {heading => $heading, syntax => $f{syntax} // [],
                         default => ($f{default} // [])->[0],
                         context => ($f{context} // [])->[0]};
        }
    }
    return \%d;
}

# the parameters a Syntax form takes: (min, max), max undef for "..."
sub syntax_arity {
    my ($form) = @_;
    $form =~ s/;\s*$//;
    my @t = split ' ', $form;
    shift @t;                               # the directive
    # "a | b" is one parameter
    my $s = join ' ', @t;
    $s =~ s/\s*\|\s*/|/g;
    @t = split ' ', $s;
    my ($min, $max) = (0, 0);
    for my $t (@t) {
        if ($t eq '...') {
            $max = undef;
            next;
        }
        $max++ if defined $max;
        $min++ unless $t =~ /^\[.*\]$/;
    }
    return ($min, $max);
}

# The defaults the code gives a field when no directive set it
# (ngx_conf_init_*value() of an init_main_conf, ngx_conf_merge_*value()
# of a merge_loc_conf): field => the value as the code writes it.
sub defaults_in_code {
    my %v;
    for my $file (sort glob "$ROOT/src/*.c") {
        my $src = _slurp($file);
        while ($src =~ /ngx_conf_init_\w*value\(\w+->(\w+),\s*([^;]+?)\);/g) {
            $v{$1} //= $2;
        }
        while ($src =~ /ngx_conf_merge_\w*value\(conf->(\w+),\s*prev->\w+,
                        \s*([^;]+?)\);/gx)
        {
            $v{$1} //= $2;
        }
        # a string's default, set when none was given
        while ($src =~ /ngx_str_set\(&\w+->(\w+),\s*"([^"]*)"\);/g) {
            $v{$1} //= $2;
        }
    }
    return \%v;
}

# nginx's time and size units, as ngx_parse_time() and ngx_parse_size()
my %MS = (ms => 1, s => 1000, m => 60_000, h => 3_600_000,
          d => 86_400_000, '' => 1);
my %SIZE = ('' => 1, k => 1024, m => 1024 * 1024);

sub msec {
    my ($t) = @_;
    return $1 * $MS{ $2 // '' } if $t =~ /^(\d+)(ms|s|m|h|d)?$/;
    return undef;
}

sub sec {
    my ($t) = @_;
    return $1 if $t =~ /^(\d+)$/;
    my $ms = msec($t);
    return defined $ms ? $ms / 1000 : undef;
}

sub size {
    my ($t) = @_;
    return $1 * $SIZE{ lc($2 // '') } if $t =~ /^(\d+)([kKmM])?$/;
    return undef;
}

# every ```nginx block: {where => 'docs/x.md:LINE', text => ...}
sub nginx_examples {
    my @ex;
    for my $file (sort(glob("$ROOT/docs/*.md")), "$ROOT/README.md") {
        (my $rel = $file) =~ s{^\Q$ROOT\E/}{};
        open my $fh, '<', $file or die "$file: $!";
        my ($in, $start, $text);
        while (my $line = <$fh>) {
            if (!$in && $line =~ /^\s*```nginx\s*$/) {
                ($in, $start, $text) = (1, $., '');
            }
            elsif ($in && $line =~ /^\s*```\s*$/) {
                $in = 0;
                push @ex, {where => "$rel:$start", file => $rel,
                           text => $text};
            }
            elsif ($in) {
                $text .= $line;
            }
        }
        close $fh;
    }
    return @ex;
}

# the statements at the top level of a configuration fragment, each with
# its block
sub top_statements {
    my ($text) = @_;
    my @st;
    my ($cur, $depth) = ('', 0);
    for my $line (split /\n/, $text) {
        $cur .= "$line\n";
        (my $code = $line) =~ s/#.*//;
        $code =~ s/'[^']*'|"[^"]*"//g;
        $depth += () = $code =~ /\{/g;
        $depth -= () = $code =~ /\}/g;
        if ($depth == 0 && $code =~ /[;}]\s*$/) {
            push @st, $cur;
            $cur = '';
        }
    }
    push @st, $cur if $cur =~ /\S/;
    return @st;
}

# the metric families: the table of the code, and the first column of
# the table under "## Metrics" of docs/operator.md
sub metric_families_in_code {
    my $src = _slurp("$ROOT/src/ngx_http_linegate_metrics.c");
    my ($table) = $src =~ /ngx_http_linegate_families\[\]\s*=\s*\{(.*?)\n\};/s;
    my @f = $table =~ /\{\s*"(linegate_\w+)",\s*"(\w+)"/g;
    my %f = @f;
    # written apart from the table, a counter
    $f{$1} = 'counter' while $src =~ /"(linegate_\w+_total) %uA\\n"/g;
    return \%f;
}

sub metric_families_in_docs {
    my $md = _slurp("$ROOT/docs/operator.md");
    my ($section) = $md =~ /^## Metrics\n(.*?)^## /ms;
    my %f;
    while ($section =~ /^\| `(linegate_\w+)` \| (\w+) \|/mg) {
        $f{$1} = $2;
    }
    return \%f;
}

1;
