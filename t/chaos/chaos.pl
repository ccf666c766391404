#!/usr/bin/env perl
# make chaos: the chaos harness of issue 13 (docs/chaos.md).
#
#   perl t/chaos/chaos.pl            # CHAOS_SECONDS (180, at most 300),
#                                    # CHAOS_SEED, CHAOS_CLIENTS (8),
#                                    # CHAOS_FAULTS (comma list; all),
#                                    # CHAOS_SETTLE (10 s)
#
# Exit status: 0 when every invariant holds, 1 on any violation.

use strict;
use warnings;

# Compiled before the modules, so run after their END blocks: the status
# is set again last, whatever an END block of theirs does to $? (LG::Stack's
# once left 0: `local $? = $?` in an END block; it now keeps the status).
my $STATUS;
END { $? = $STATUS if defined $STATUS }

use FindBin;
use lib "$FindBin::Bin/lib", "$FindBin::Bin/../lib";

use LG::Chaos;
use LG::Chaos::Faults;

my $seconds = $ENV{CHAOS_SECONDS} // 180;
die "CHAOS_SECONDS must be 1..300\n"
    unless $seconds =~ /^\d+$/ && $seconds >= 1 && $seconds <= 300;

my @faults = defined $ENV{CHAOS_FAULTS}
    ? grep { length } split /[,\s]+/, $ENV{CHAOS_FAULTS}
    : @LG::Chaos::Faults::KINDS;

my $c = LG::Chaos->new(
    seconds => $seconds,
    seed    => $ENV{CHAOS_SEED},
    clients => $ENV{CHAOS_CLIENTS} // 8,
    settle  => $ENV{CHAOS_SETTLE} // 10,
    faults  => \@faults,
);
my $r = $c->run;
print $r->{report};
$STATUS = $r->{violations} ? 1 : 0;
exit $STATUS;
