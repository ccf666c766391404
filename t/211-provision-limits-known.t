# t/210 again, every worker knowing the credentials before each call
# (LG::Provision's known mode): limits as plain commands
# (src/ngx_http_linegate_provision_plain.c) must answer as the script does.
use strict;
use warnings;

$ENV{LG_PV_KNOWN} = 1;
my $file = 't/210-provision-limits.t';
do "./$file" or die($@ || "$file: $!");
