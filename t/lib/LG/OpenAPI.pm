package LG::OpenAPI;

# docs/openapi.yaml, the OpenAPI 3.1 description of everything linegate
# serves, for the tests: answers are checked against it.
#
#   my $doc = LG::OpenAPI::document();        # resolved, strict, cached
#   my $tpl = LG::OpenAPI::template('/api/line-requests/6a0b...');
#             # '/api/line-requests/{id}'
#   my @errors = LG::OpenAPI::invalid($tx);   # empty: the answer matches
#             # a status the operation does not list: its `default`,
#             # an error (400 and up) in the API's error format
#   my @errors = LG::OpenAPI::invalid($tx, 'post', '/accounts/limits');
#   answer_matches($tx, 'created');           # a test: ok(!invalid($tx))
#
# LG::Lines and LG::Provision use it; so can any test of the webhook or
# operator API.

use strict;
use warnings;

use Carp qw(croak);
use Exporter 'import';
use JSON::Validator;
use LG::Stack ();
use Mojo::JSON qw(decode_json);
use Test::More;

our @EXPORT_OK = qw(answer_matches);

our $FILE = 'docs/openapi.yaml';

my $ROOT = $LG::Stack::ROOT;
my ($DOC, @TEMPLATES);

# The document, its references resolved. Strict: no coercion of types, a
# number where a string is described (or the reverse) is an error.
#
# JSON::Validator (5.x) does not follow a response that is a reference
# ({"$ref": "#/components/responses/..."}): it would check nothing of such
# an answer. Those references are replaced by what they point at.
sub document {
    return $DOC //= do {
        my $doc = JSON::Validator->new->schema("$ROOT/$FILE")->schema
                  ->resolve;
        $doc->coerce({});

        my $paths = $doc->data->{paths} // {};
        for my $p (keys %$paths) {
            for my $m (grep { !/^(?:parameters|summary|description|servers)$/ }
                       keys %{ $paths->{$p} })
            {
                my $responses = $paths->{$p}{$m}{responses} // next;
                for my $status (keys %$responses) {
                    next unless exists $responses->{$status}{'$ref'};
                    $responses->{$status}
                        = $doc->get([paths => $p, $m, responses => $status])
                          // croak "$FILE: $p $m $status: broken \$ref";
                }
            }
        }

        $doc;
    };
}

# the path of the document a request path falls under: itself when the
# document has it, else the first template ({name} matches one segment)
# that matches; undef when none does
sub template {
    my ($path) = @_;
    my $paths = document()->get('/paths') // {};

    return $path if $paths->{$path};

    @TEMPLATES = map {
        my $re = join '', map { /^\{.+\}$/ ? '[^/]+' : quotemeta }
                 split /(\{[^\/{}]+\})/, $_;
        [$_, qr/^$re$/];
    } sort grep {/\{/} keys %$paths unless @TEMPLATES;

    for my $t (@TEMPLATES) {
        return $t->[0] if $path =~ $t->[1];
    }

    return undef;
}

# The errors of an answer against the document (empty: it matches), by
# the request's method and path unless given (a path of the document or
# one it has a template for).
sub invalid {
    my ($tx, $method, $path) = @_;

    my $res = $tx->res;
    $method //= $tx->req->method;
    $path //= $tx->req->url->path->to_string;

    my $tpl = template($path)
        // return ("$path: no such path in $FILE");

    # a status the operation does not list is its `default`: an error
    my $op = document()->get([paths => $tpl, lc $method]) // {};
    my $code = $res->code // 0;
    if ($op->{responses} && !$op->{responses}{$code}) {
        return ("$method $tpl $code: not listed and no default in $FILE")
            unless $op->{responses}{default};
        return ("$method $tpl $code: not listed, and default is for "
                . 'errors (400 and up) only')
            if $code < 400;
    }
    my $body = eval { decode_json($res->body) };
    my %h = map { (lc $_ => $res->headers->header($_)) }
            @{ $res->headers->names };

    return document()->validate_response(
        [lc $method, $tpl, $res->code],
        {
            body => sub {
                return {exists => defined $body, value => $body,
                        content_type => 'application/json'};
            },
            header => sub {
                my $v = $h{lc $_[0]};
                return {exists => defined $v, value => $v};
            },
        },
    );
}

# a test: the answer matches the document
sub answer_matches {
    my ($tx, $name, $method, $path) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;

    my @errors = invalid($tx, $method, $path);
    ok(!@errors, "$name: matches $FILE")
        or diag(join "\n", map {"$_"} @errors, 'body: ' . $tx->res->body);

    return !@errors;
}

1;
