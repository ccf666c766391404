# t/200 again, every worker knowing the credentials before each call
# (LG::Provision's known mode). The decision is written once, in C
# (src/ngx_http_linegate_provision_plain.c), for both credential paths:
# this stays as a regression test that a known and an unknown caller
# (pv_account.lua first) get the same answers.
use strict;
use warnings;

$ENV{LG_PV_KNOWN} = 1;
my $file = 't/200-provision-preview.t';
do "./$file" or die($@ || "$file: $!");
