# t/200 again, every worker knowing the credentials before each call
# (LG::Provision's known mode): preview and limits as plain commands
# (src/ngx_http_linegate_provision_plain.c) must answer as the script does.
use strict;
use warnings;

$ENV{LG_PV_KNOWN} = 1;
my $file = 't/200-provision-preview.t';
do "./$file" or die($@ || "$file: $!");
