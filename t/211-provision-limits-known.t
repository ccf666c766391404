# t/210 again, every worker knowing the credentials before each call
# (LG::Provision's known mode). The limits are decided once, in C
# (src/ngx_http_linegate_provision_plain.c), for both credential paths:
# this stays as a regression test that a known and an unknown caller
# (pv_account.lua first) get the same answers.
use strict;
use warnings;

$ENV{LG_PV_KNOWN} = 1;
my $file = 't/210-provision-limits.t';
do "./$file" or die($@ || "$file: $!");
