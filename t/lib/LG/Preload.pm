package LG::Preload;

# A small LD_PRELOAD library built for a test, and the file through which
# the test tells it what to do (LG::ClockShift, LG::JanssonFail). Use it
# before the stack starts: the library is loaded by every process the
# test starts from then on, and acts only where its source says.
#
#   my $p = LG::Preload->new(name => 'shift', env => 'LG_CLOCK_SHIFT',
#                            source => $c, libs => ['-ldl'],
#                            what => 'the clock shifter');
#   $p->set('61000');     # the file's new content, whole (a rename)

use strict;
use warnings;

use File::Temp qw(tempdir);
use Test::More;

# Builds the library, or skips the test file; the file starts empty and
# its path is in $ENV{<env>}.
sub new {
    my ($class, %o) = @_;
    my $dir = tempdir(CLEANUP => 1);
    # the workers may run as another user (nginx's "user")
    chmod 0755, $dir;

    open my $src, '>', "$dir/$o{name}.c" or die "$dir/$o{name}.c: $!";
    print $src $o{source};
    close $src;

    my $cc = $ENV{CC} // 'cc';
    system($cc, '-shared', '-fPIC', '-O1', '-o', "$dir/$o{name}.so",
           "$dir/$o{name}.c", @{ $o{libs} // [] }) == 0
        or plan skip_all => "$cc could not build $o{what}";

    my $self = bless { file => "$dir/$o{name}.in" }, $class;
    $self->set('');
    $ENV{$o{env}} = $self->{file};
    $ENV{LD_PRELOAD} = join ' ', "$dir/$o{name}.so", $ENV{LD_PRELOAD} // ();
    return $self;
}

# written whole, then renamed: the library never reads half of it
sub set {
    my ($self, $content) = @_;
    my $file = $self->{file};
    open my $fh, '>', "$file.new" or die "$file.new: $!";
    print $fh $content;
    close $fh;
    rename "$file.new", $file or die "rename: $!";
}

1;
