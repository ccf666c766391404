#!/usr/bin/env python3
#
# Writes the seed corpora of t/fuzz/corpus/<target>/ (a few dozen small
# files each).  Deterministic: run again after changing a seed list, and
# commit the result.  The fuzzers' own findings are not kept here; only
# seeds and regression inputs (named regress-*) are.

import base64
import hashlib
import hmac
import json
import os
import shutil

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'corpus')


def b64u(b):
    return base64.urlsafe_b64encode(b).rstrip(b'=')


def write(target, seeds):
    d = os.path.join(ROOT, target)
    if os.path.isdir(d):
        for f in os.listdir(d):
            if f.startswith('seed-'):
                os.unlink(os.path.join(d, f))
    os.makedirs(d, exist_ok=True)
    for i, s in enumerate(seeds):
        if isinstance(s, str):
            s = s.encode()
        with open(os.path.join(d, 'seed-%02d' % i), 'wb') as f:
            f.write(s)


def j(o):
    return json.dumps(o, separators=(',', ':')).encode()


# jwt: "FUZZ" signatures are accepted by the target (as long as the key)
SIG = b64u(b'FUZZ' + b'\0' * 252)
STD = {'iss': 'https://clerk.example.com', 'azp': 'https://app.example.com',
       'sub': 'user_2abc', 'exp': 1700000600, 'nbf': 1699999990,
       'iat': 1699999990}


def tok(hdr, pay, sig=SIG):
    return b64u(j(hdr)) + b'.' + b64u(j(pay)) + b'.' + sig


H1 = {'alg': 'RS256', 'kid': 'k1', 'typ': 'JWT'}
jwt = [
    tok(H1, STD),
    tok({'alg': 'RS256', 'kid': 'k2'}, dict(STD, o={'id': 'org_1'})),
    tok(H1, dict(STD, org_id='org_2', sid='sess_1')),
    tok(H1, dict(STD, azp='http://localhost:3000')),
    tok(H1, dict(STD, exp=1)),
    tok(H1, dict(STD, nbf=1800000000)),
    tok(H1, dict(STD, iss='https://evil.example.com')),
    tok(H1, dict(STD, sub='')),
    tok(H1, dict(STD, exp='1700000600')),
    tok(H1, dict(STD, exp=1.7e9)),
    tok(H1, dict(STD, exp=1e300)),
    tok({'alg': 'none', 'kid': 'k1'}, STD),
    tok({'alg': 'HS256', 'kid': 'k1'}, STD),
    tok({'alg': 'RS256', 'kid': 'k3'}, STD),
    tok({'alg': 'RS256'}, STD),
    tok({'alg': 'RS256', 'kid': 'k1', 'cat': 'cl_B7d4PD333AAA'}, STD),
    tok({'alg': 'RS256', 'kid': 'k1', 'crit': ['b64']}, STD),
    tok(H1, STD, b64u(b'\1' * 256)),
    tok(H1, STD, b'AAAA'),
    tok(H1, STD, b''),
    b64u(j(H1)) + b'.' + b64u(j(STD)),
    b64u(j(H1)) + b'..' + SIG,
    b'..',
    b'a.b.c',
    b'eyJ.eyJ.AAA=',
    tok(H1, [1, 2]),
    tok([1], STD),
    b64u(b'{"alg":"RS256","kid":"k1","kid":"k2"}') + b'.' + b64u(j(STD))
    + b'.' + SIG,
    tok(H1, dict(STD, azp=None)),
    tok(H1, dict(STD, sub='u' * 300)),
    # kinds of token: session, ignore, template categories, OAuth, M2M
    tok({'alg': 'RS256', 'kid': 'k1', 'typ': 'JWT',
         'cat': 'cl_B7d4PD111AAA'}, dict(STD, v=2, o={'id': 'org_1'})),
    tok({'alg': 'RS256', 'kid': 'k1', 'cat': 'cl_I7d4PD111III'}, STD),
    tok({'alg': 'RS256', 'kid': 'k1', 'cat': 'cl_B7d4PD222AAA'}, STD),
    tok({'alg': 'RS256', 'kid': 'k1', 'typ': 'at+jwt'},
        dict(STD, org_id='org_1', client_id='c1', scope='profile')),
    tok(H1, dict(STD, sub='mch_2abc')),
]
write('jwt', jwt)

# jwks: JWKS and PEM shapes (the n below is not a real modulus)
N = b64u(b'\xc1' + b'\x11' * 255).decode()
jwks = [
    j({'keys': [{'kty': 'RSA', 'kid': 'k1', 'n': N, 'e': 'AQAB'}]}),
    j({'keys': [{'kty': 'RSA', 'kid': 'k1', 'use': 'sig', 'alg': 'RS256',
                 'n': N, 'e': 'AQAB'},
                {'kty': 'RSA', 'kid': 'k2', 'n': N, 'e': 'AQAB'}]}),
    j({'keys': [{'kty': 'EC', 'kid': 'e1', 'crv': 'P-256', 'x': 'AA',
                 'y': 'AA'}]}),
    j({'keys': [{'kty': 'RSA', 'kid': 'k1', 'use': 'enc', 'n': N,
                 'e': 'AQAB'}]}),
    j({'keys': [{'kty': 'RSA', 'kid': 'k1', 'n': 'AQAB', 'e': 'AQAB'}]}),
    j({'keys': [{'kty': 'RSA', 'kid': 'k1', 'n': N, 'e': 'AA'}]}),
    j({'keys': [{'kty': 'RSA', 'n': N, 'e': 'AQAB'}]}),
    j({'keys': []}),
    j({'keys': {}}),
    j({}),
    j([]),
    b'',
    b'{',
    b'-----BEGIN PUBLIC KEY-----\nMIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA\n'
    b'-----END PUBLIC KEY-----\n',
    b'-----BEGIN PUBLIC KEY-----\n-----END PUBLIC KEY-----\n',
    b'-----BEGIN RSA PUBLIC KEY-----\nAAAA\n-----END RSA PUBLIC KEY-----\n',
    b'-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n',
    b'-----BEGIN PUBLIC KEY-----\n',
    b'garbage\n-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n',
]
write('jwks', jwks)

# stripe_signature: header "\n" body
B = b'{"id":"evt_1","type":"invoice.paid"}'
mac = hmac.new(b'whsec_fuzz0123456789abcdef', b'1700000000.' + B,
               hashlib.sha256).hexdigest().encode()
sig = [
    b't=1700000000,v1=' + mac + b'\n' + B,
    b't=1700000000,v1=' + b'0' * 64 + b',v1=' + mac + b'\n' + B,
    b't=1700000000,v0=' + mac + b',v1=' + mac + b'\n' + B,
    b't=1700000000, v1=' + mac + b' \n' + B,
    b't=1699990000,v1=' + mac + b'\n' + B,
    b't=1700000000,t=1700000000,v1=' + mac + b'\n' + B,
    b'v1=' + mac + b',t=1700000000\n' + B,
    b't=1700000000\n' + B,
    b't=,v1=' + mac + b'\n' + B,
    b't=17000000000000000000,v1=' + mac + b'\n' + B,
    b't=1700000000,,v1=' + mac + b'\n' + B,
    b't=1700000000,v1\n' + B,
    b't=1700000000,=x\n' + B,
    b't=1700000000,v1=' + mac[:63] + b'\n' + B,
    b't=1700000000,v1=' + mac.upper() + b'\n' + B,
    b't=1700000000,v1=' + mac + b'00\n' + B,
    b'\n',
    b't=1700000000\n',
    b',\n',
    b'eyJhbGciOiJSUzI1NiJ9',
    b'YWJj',
    b'YQ==',
    b'YQ',
]
write('stripe_signature', sig)

# line_create: bodies of POST /api/line-requests
P = {'firstName': 'Ada', 'lastName': 'Lovelace', 'channelType': 'phone'}
create = [
    j(P),
    j(dict(P, lineType='byon', phone='+12025550123', email='ada@ex.com')),
    j(dict(P, channelType='email', email='ada.l+x@mail.ex.co')),
    j(dict(P, zipcode='12345', state='ny')),
    j(dict(P, zipcode='12345-6789', state='CA',
           forwardCallsTo='+447911123456')),
    j(dict(P, profileImageUrl='https://img.ex.com/a.png')),
    j(dict(P, profileImageUrl='ftp://x')),
    j(dict(P, profileImageUrl='http:///x')),
    j(dict(P, firstName='  \u00e9\u00e8  ')),
    j(dict(P, firstName='a\u0001b')),
    j(dict(P, firstName='x' * 101)),
    j(dict(P, firstName='')),
    j(dict(P, firstName=None)),
    j(dict(P, firstName=5)),
    j(dict(P, channelType='fax')),
    j(dict(P, lineType='rented')),
    j(dict(P, lineType='byon')),
    j(dict(P, email='a@b')),
    j(dict(P, email='.a@b.co')),
    j(dict(P, email='a..b@b.co')),
    j(dict(P, email='a@-b.co')),
    j(dict(P, email='a' * 65 + '@b.co')),
    j(dict(P, phone='+1202555012x', lineType='byon')),
    j(dict(P, phone='12025550123', lineType='byon')),
    j(dict(P, zipcode='1234')),
    j(dict(P, zipcode='12345_6789')),
    j(dict(P, state='N1')),
    b'{"firstName":"a","firstName":"b"}',
    b'[]', b'"x"', b'{', b'', b'{}', b'\xff\xfe',
    b'{"firstName":"\\ud800"}',
]
# PATCH's action, read from the same body
create += [
    j({'action': 'payment_link'}), j({'action': 'cancel'}),
    j({'action': 'Cancel'}), j({'action': 'cancel '}), j({'action': ''}),
    j({'action': None}), j({'action': 1}), j({'action': ['cancel']}),
    j({'action': 'delete'}), b'{"action":"cancel\\u0000"}',
    b'{"action":"cancel","action":"payment_link"}',
    j(dict(P, action='cancel')),
]
write('line_create', create)

# confirm: bodies of POST /provisioning/confirm
T = 'lpv_' + 'a1B2' * 10
confirm = [
    j({'preview_token': T}), j({'preview_token': T + '!'}),
    j({'preview_token': 'lpv_short'}), j({'preview_token': 'x' * 40}),
    j({'preview_token': 'lpv_' + 'a' * 200}), j({'preview_token': ''}),
    j({'preview_token': None}), j({'preview_token': 1}),
    j({'preview_token': [T]}), j({}), b'[]', b'', b'{', b'null',
    j({'preview_token': T, 'extra': {'a': [1, 2, {'b': None}]}}),
    b'{"preview_token":"' + T.encode() + b'","preview_token":"x"}',
    b'{"preview_token":"lpv_\\u0000' + b'a' * 40 + b'"}',
]
write('confirm', confirm)


# webhook: body [NUL RESP reply of the script]
def ev(t, obj, **kw):
    e = {'id': 'evt_1', 'object': 'event', 'type': t, 'created': 1700000000,
         'data': {'object': obj}}
    e.update(kw)
    return j(e)


SUB = {'id': 'sub_1', 'status': 'active',
       'metadata': {'workspace_id': 'ws_1'},
       'items': {'data': [{'price': {'id': 'price_pro'}}]}}
webhook = [
    ev('invoice.paid', {'id': 'in_1'}) + b'\0:3\r\n',
    ev('invoice.paid', {'id': 'in_1'}) + b'\0:0\r\n',
    ev('invoice.voided', {'id': 'in_1'}) + b'\0:1\r\n',
    ev('invoice.marked_uncollectible', {'id': 'in_1'}) + b'\0:2\r\n',
    ev('invoice.paid', {'id': 'in 1'}),
    ev('invoice.paid', {}),
    ev('customer.subscription.created', SUB) + b'\0:3\r\n',
    ev('customer.subscription.updated', SUB) + b'\0*1\r\n:3\r\n',
    ev('customer.subscription.deleted', SUB) + b'\0-ERR x\r\n',
    ev('customer.subscription.updated',
       dict(SUB, items={'data': [{'plan': {'id': 'price_basic'}}]})),
    ev('customer.subscription.updated',
       dict(SUB, items={'data': [{'price': 'x'}, {}, 3]})),
    ev('customer.subscription.updated', dict(SUB, metadata={})),
    ev('customer.subscription.updated',
       dict(SUB, metadata={'workspace_id': ''})),
    ev('customer.subscription.updated', dict(SUB, status=None)),
    ev('customer.subscription.paused', SUB),
    ev('charge.succeeded', {'id': 'ch_1'}),
    ev('invoice.paid', {'id': 'in_1'}, created='x') + b'\0$1\r\n3\r\n',
    ev('invoice.paid', 'in_1'),
    j({'id': 'evt_1', 'type': 'invoice.paid'}),
    j({'id': 'evt 1', 'type': 'invoice.paid', 'data': {'object': {}}}),
    b'[]', b'', b'{',
    b' ' + ev('customer.subscription.updated', SUB) + b'\0:3\r\n',
    # the customer compared by wh_subscription: another one's ({7}), a
    # workspace without one ({6}), expanded, or not a string
    ev('customer.subscription.updated', dict(SUB, customer='cus_1'))
    + b'\0*1\r\n:7\r\n',
    ev('customer.subscription.updated',
       dict(SUB, customer={'id': 'cus_1'})) + b'\0*1\r\n:6\r\n',
    ev('customer.subscription.deleted', dict(SUB, customer=7))
    + b'\0*1\r\n:7\r\n',
    # created orders the events: an integer, at most now (1700000000)
    # and the tolerance (300)
    ev('customer.subscription.updated', SUB, created=None),
    ev('customer.subscription.updated', SUB, created=1700000300)
    + b'\0:3\r\n',
    ev('customer.subscription.updated', SUB, created=1700000301),
    ev('customer.subscription.updated', SUB, created=1.7e9),
    ev('customer.subscription.updated', SUB, created=2 ** 63 - 1),
]
write('webhook', webhook)

# headers: Authorization \n key id \n secret \n Idempotency-Key \n path id
K = 'tuco_' + 'Ab1-_' * 8
headers = [
    'Bearer %s\nsbk_1\nsecret\nkey-1\n0123456789abcdef01234567' % K,
    'bearer %s\nsbk-1\ns\nk\n0123456789ABCDEF01234567' % K,
    'Bearer    %s\n\n\n\n' % K,
    'Bearer \nx\ny\n\ninv_1',
    'Bearer\nid\nsecret\n' + 'k' * 300 + '\nin_1AbC',
    'Basic dXNlcjpwYXNz\nid!\nsecret\nkey\x01\n0123',
    'Bearer eyJhbGciOiJSUzI1NiJ9.e30.sig\nid\n' + 's' * 300 + '\n\n',
    'Bearer tuco_short\n' + 'i' * 100 + '\nsecret\nk\n',
    'Bearer tuco_' + 'a' * 300 + '\nid\nsecret\nk\nsub_' + 'x' * 260,
    'Bearer tuco_' + 'a' * 31 + '!\nid\nsecret\n\xc3\xa9\n',
    '\n\n\n\n',
    'Bearer %s' % K,
]
# then Cookie (parts split by CR) \n Content-Type \n Origin (parts) \n
# method (GET HEAD POST PUT PATCH DELETE: byte % 6) and flags (1 no
# Authorization, 2 authorized parties configured, 4 Clerk-only)
NOAUTH, AZP = 1, 2
TOK = 'eyJhbGciOiJSUzI1NiJ9.e30.sig'


def cw(cookie, ctype, origin, method, flags, auth='x'):
    return '%s\n\n\n\n\n%s\n%s\n%s\n%s%s' % (
        auth, cookie, ctype, origin, chr(method), chr(flags))


headers += [
    cw('__session=' + TOK, 'application/json', '', 2, NOAUTH),
    cw('__session=' + TOK, 'application/json; charset=utf-8',
       'https://app.example.com', 2, NOAUTH | AZP),
    cw('__session=' + TOK, 'APPLICATION/JSON', 'https://APP.example.com', 4,
       NOAUTH | AZP),
    cw('__session=' + TOK, 'application/json', 'https://evil.example.com',
       2, NOAUTH | AZP),
    cw('__session=' + TOK, 'application/json', 'null', 5, NOAUTH | AZP),
    cw('__session=' + TOK, 'application/json',
       'https://app.example.com\rhttps://app.example.com', 3, NOAUTH | AZP),
    cw('__session=' + TOK, 'application/json', 'https://app.example.com/',
       2, NOAUTH | AZP),
    cw('__session=' + TOK, 'text/plain', '', 2, NOAUTH),
    cw('__session=' + TOK, 'application/x-www-form-urlencoded', '', 2,
       NOAUTH),
    cw('__session=' + TOK, 'application/jsonp', '', 2, NOAUTH),
    cw('__session=' + TOK, 'application/json\t;x', '', 2, NOAUTH),
    cw('__session=' + TOK, '', '', 2, NOAUTH),
    cw('a=b; __session=' + TOK + '; c=d', 'application/json', '', 2,
       NOAUTH),
    cw('a=b\r__SESSION = ' + TOK, 'application/json', '', 2, NOAUTH),
    cw('__session;__session=' + TOK, 'application/json', '', 2, NOAUTH),
    cw('__session=', 'application/json', '', 2, NOAUTH),
    cw('x__session=' + TOK, 'application/json', '', 2, NOAUTH),
    cw('__session=' + TOK, 'text/plain', '', 0, NOAUTH),
    cw('__session=' + TOK, 'text/plain', 'https://evil.example.com', 1,
       NOAUTH | AZP),
    cw('__session=' + TOK, 'text/plain', '', 2, 0, auth='Bearer ' + TOK),
    cw('', 'application/json', '', 2, NOAUTH, auth='Bearer %s' % K),
    cw('', '', '', 0, 4, auth='Bearer %s' % K),
    cw('', '', '', 2, NOAUTH | 4),
    # cookie names are case-sensitive (RFC 6265): only "__session" counts
    cw('__SESSION=' + TOK, 'application/json', '', 2, NOAUTH),
    cw('__Session=x; __session=' + TOK, 'application/json', '', 2, NOAUTH),
    cw('a=b,__session=' + TOK + ';\t__session=y', 'application/json', '',
       2, NOAUTH),
]
write('headers', headers)


# stripe_reply: status (2 bytes) Retry-After \n body
def st(code, retry, body):
    return bytes([code >> 8, code & 255]) + retry + b'\n' + body


stripe = [
    st(200, b'', j({'id': 'in_1', 'status': 'open',
                    'hosted_invoice_url': 'https://pay.ex/i'})),
    st(200, b'', j({'id': 'cus_1', 'invoice_settings':
                    {'default_payment_method': 'pm_1'}})),
    st(200, b'', j({'id': 'cus_1', 'default_source': {'id': 'card_1'}})),
    st(200, b'', j({'id': 'cus_1', 'deleted': True})),
    st(200, b'', j({'id': 'sub_1', 'status': 'active'})),
    st(200, b'', j({'id': 'in 1', 'status': 'open'})),
    st(200, b'', j({'id': 5, 'status': 'open'})),
    st(200, b'', j([1])),
    st(200, b'', b'not json'),
    st(200, b'', b''),
    st(402, b'', j({'error': {'type': 'card_error', 'code': 'card_declined',
                              'message': 'Your card was declined.'}})),
    st(404, b'', j({'error': {'code': 'resource_missing'}})),
    st(409, b'', j({'error': {'type': 'idempotency_error'}})),
    st(400, b'', j({'error': 'x'})),
    st(429, b'2', j({'error': {'type': 'rate_limit_error'}})),
    st(429, b'99999999999999999999', b''),
    st(503, b'-1', b'<html>'),
    st(502, b'', b''),
    st(0, b'', b''),
    st(301, b'', j({})),
]
write('stripe_reply', stripe)


# redis_reply: RESP
def bulk(s):
    s = s.encode() if isinstance(s, str) else s
    return b'$%d\r\n%s\r\n' % (len(s), s)


def arr(*items):
    return b'*%d\r\n' % len(items) + b''.join(items)


acct = arr(bulk('inbound_only'), bulk('5'), b'$-1\r\n')
lines = arr(bulk('m1'), bulk('1699990000000'), bulk('m2'),
            bulk('1699999990000'))
redis = [
    arr(acct, lines, b':7\r\n'),
    arr(acct, arr(), b':0\r\n'),
    arr(arr(bulk('full'), bulk('1'), bulk('1')), lines, b':7\r\n'),
    arr(arr(bulk('inbound_only'), bulk('2.9'), bulk(' 10 ')), lines,
        b':1\r\n'),
    arr(arr(bulk('inbound_only'), bulk('-1'), bulk('1e999')), lines,
        b':1\r\n'),
    arr(arr(bulk('inbound_only'), bulk('nan'), bulk('0x10')), lines,
        b':1\r\n'),
    arr(acct, arr(bulk('m1'), bulk('1e300')), b':1\r\n'),
    arr(acct, arr(bulk('m1'), bulk('-inf')), b':1\r\n'),
    arr(acct, arr(bulk('m1')), b':1\r\n'),
    arr(acct, arr(bulk('m1'), b':5\r\n'), b':1\r\n'),
    arr(acct, lines, bulk('7')),
    arr(b'$-1\r\n', lines, b':7\r\n'),
    arr(acct, b'-ERR x\r\n', b':7\r\n'),
    arr(b':1\r\n', b':2\r\n', b':3\r\n'),
    arr(b':0\r\n', bulk('12'), bulk('x'), b'+OK\r\n', b'*-1\r\n'),
    arr(bulk('9223372036854775807'), bulk('9223372036854775808'),
        bulk('-5'), bulk('')),
    arr(arr(arr(arr(b':1\r\n')))),
    b':1\r\n', b'+OK\r\n', b'-ERR\r\n', b'$-1\r\n', b'*0\r\n', b'*-1\r\n',
    b'$3\r\nabc\r\n', b'*2\r\n:1\r\n', b'%1\r\n:1\r\n:2\r\n',
    b',1.5\r\n', b'#t\r\n', b'_\r\n',
]
# the preview's pipeline has a fourth reply (the token's SET), the
# limits request's two: every three-reply seed also in those shapes
OK = b'+OK\r\n'
for item in list(redis):
    if item.startswith(b'*3\r\n'):
        body = item[len(b'*3\r\n'):]
        redis.append(b'*4\r\n' + body + OK)
redis += [arr(acct, lines), arr(acct, arr()), arr(acct, lines, b':7\r\n',
          b'-OOM command not allowed\r\n')]
write('redis_reply', redis)


# lines_read: request path \n RESP of the line's HGETALL
def flat(**kw):
    items = []
    for k, v in kw.items():
        items += [bulk(k), bulk(v)]
    return arr(*items)


ID = '0123456789abcdef01234567'
LINE = dict(firstName='Ada', lastName='L', channelType='phone',
            lineType='purchased', provisioningStatus='awaiting_payment',
            paymentStatus='open', paymentUrl='https://pay.ex/i',
            invoiceId='in_1', createdAt='2023-11-14T22:13:20.000Z',
            updatedAt='2023-11-14T22:13:20.000Z', _id=ID,
            _ud='2023-11-14', _nc='3', _tm='7', reconciledAt='1',
            reissueAt='x')
P = ('/api/line-requests/' + ID).encode()
lines_read = [
    P + b'\n' + flat(**LINE),
    P + b'\n' + flat(**dict(LINE, _ud='2023-11-13')),
    P + b'\n' + flat(**dict(LINE, _nc='', _tm='99999999999999999999')),
    P + b'\n' + flat(**dict(LINE, firstName='A"\\\x01\x7f')),
    P + b'\n' + flat(**dict(LINE, channelType='email', email='a@b.co')),
    P + b'\n' + flat(**dict(LINE, lineType='byon', phone='+12025550123',
                             forwardCallsTo='+12025550124')),
    P + b'\n' + flat(**dict(LINE, healthStatus='ok',
                             healthCheckedAt='2023-11-14T22:13:20.000Z')),
    P + b'\n' + flat(firstName='x'),
    P + b'\n' + arr(),
    P + b'\n' + arr(bulk('firstName')),
    P + b'\n' + arr(bulk('firstName'), b':1\r\n'),
    P + b'\n' + arr(b'$-1\r\n', bulk('x')),
    P + b'\n' + b'$-1\r\n',
    P + b'\n' + b'-ERR\r\n',
    b'/api/line-requests/' + ID.upper().encode() + b'\n*0\r\n',
    b'/api/line-requests/' + ID[:23].encode() + b'\n*0\r\n',
    b'/api/line-requests/' + ID.encode() + b'/x\n*0\r\n',
    b'/api/line-requests\n*0\r\n',
    b'1/x/y/' + ID.encode() + b'\n*0\r\n',
    b'\n',
    b'/\n',
]
# GET /api/lines/check-availability?id= (the path is not the check's)
C = b'/api/lines/check-availability?'
lines_read += [
    C + b'id=' + ID.encode() + b'\n*0\r\n',
    C + b'a=1&id=' + ID.encode() + b'&b=2\n',
    C + b'ID=' + ID.encode() + b'\n',
    C + b'id=' + ID.encode() + b'&id=x\n',
    C + b'xid=' + ID.encode() + b'&id=' + ID.upper().encode() + b'\n',
    C + b'id=' + ID[:23].encode() + b'\n',
    C + b'id=' + ID.encode() + b'0\n',
    C + b'id=\n',
    C + b'id\n',
    C + b'\n',
    C + b'id=%30123456789abcdef01234567\n',
    C + b'id=' + ''.join('%%%02X' % ord(c) for c in ID).encode() + b'\n',
    C + b'id=' + ID.encode() + b'&Id=%30' + ID[1:].encode() + b'\n',
    C + b'id=' + ID.encode() + b'&id=\n',
    C + b'id=%3' + ID[2:].encode() + b'\n',
    C + b'id=' + ID.encode() + b'%\n',
    P + b'?id=' + ID.encode() + b'\n' + flat(**LINE),
]
write('lines_read', lines_read)


# redis_slots: CLUSTER SLOTS replies, MOVED/ASK (as error replies and as
# raw text), keys with and without hash tags
def node(host, port, *more):
    h = b'$-1\r\n' if host is None else bulk(host)
    return arr(h, b':%d\r\n' % port, *more)


def rng(first, last, *nodes):
    return arr(b':%d\r\n' % first, b':%d\r\n' % last, *nodes)


NODES = (b'a 127.0.0.1:28023@24186 myself,master - 0 1 1 connected 0-5460\n'
         b'b 127.0.0.1:26309@31131 master - 0 1 5 connected\n'
         b'c 127.0.0.1:29525@32363 slave a 0 1 3 connected\n'
         b'e 127.0.0.1:7001@17001 master,fail - 0 1 3 disconnected\n'
         b'f 127.0.0.1:25647@28074 master - 0 1 3 connected 5461-16383\n')
ID_A = bulk('acbfb86f86833c715f8e4f9187daa417565af722')
ID_B = bulk('d8b11732622527a6764c01104f03274abdcc5586')
META = arr(bulk('ip'), bulk('127.0.0.1'))
slots = [
    # a Redis 7.0 cluster of two masters: ip, unknown, hostname endpoints
    arr(rng(0, 8191, node('127.0.0.1', 45121, ID_A, arr())),
        rng(8192, 16383, node('127.0.0.1', 35817, ID_B, arr()))),
    arr(rng(0, 8191, node(None, 45121, ID_A, META)),
        rng(8192, 16383, node(None, 35817, ID_B, META))),
    arr(rng(0, 8191, node('node-a.example', 45121, ID_A, META)),
        rng(8192, 16383, node('?', 35817, ID_B, META))),
    # three masters with a replica each (Redis 6)
    arr(rng(0, 5460, node('10.0.0.1', 7000, bulk('a')),
            node('10.0.0.4', 7003, bulk('d'))),
        rng(5461, 10922, node('10.0.0.2', 7001, bulk('b')),
            node('10.0.0.5', 7004, bulk('e'))),
        rng(10923, 16383, node('10.0.0.3', 7002, bulk('c')),
            node('10.0.0.6', 7005, bulk('f')))),
    arr(rng(0, 16383, node('', 6379))),
    arr(rng(0, 16383, node('::1', 7000))),
    arr(rng(0, 5460, node('h', 1)), rng(5462, 16383, node('h', 65535))),
    arr(rng(0, 5461, node('h', 7000)), rng(5461, 16383, node('h', 7001))),
    arr(rng(10, 9, node('h', 7000))),
    arr(rng(0, 16384, node('h', 7000))),
    arr(rng(0, 16383, node('h', 0))),
    arr(rng(0, 16383, node('a' * 47, 7000))),
    arr(rng(0, 16383, node('a b', 7000))),
    arr(rng(0, 16383, arr(bulk('h'), bulk('7000')))),
    arr(rng(0, 16383)),
    arr(),
    b'-MOVED 12182 127.0.0.1:35817\r\n',
    b'-ASK 12182 127.0.0.1:45121\r\n',
    b'-MOVED 12182 :35817\r\n',
    b'-MOVED 12182 ?:35817\r\n',
    b'-MOVED 1 ::1:7000\r\n',
    b'-MOVED 16384 h:7000\r\n',
    b'-CLUSTERDOWN Hash slot not served\r\n',
    b'MOVED 5 :7000',
    b'ASK 16383 ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255:65535',
    b'MOVED 1 127.0.0.1:70000',
    b'MOVED 1 127.0.0.1:7000x',
    b'MOVEDX 1 127.0.0.1:7000',
    b'lg:{ws:org_1}:gcra',
    b'lg:{acct:acct_1}:prov',
    b'foo{{bar}}zap',
    b'foo{}{bar}',
    b'123456789',
    # CLUSTER NODES: raw text, and as a bulk string reply
    NODES,
    bulk(NODES),
    b'd :6379@16379 myself,master - 0 0 1 connected 0-16383\n',
    b'd ::1:7000@17000,node-a master,fail? - 0 0 1 connected\r\n',
    b'd 127.0.0.1:7000@1 master - 0 0 1\n',
]
write('redis_slots', slots)


# operator: method byte (GET HEAD POST PUT PATCH DELETE; 0x80 a wrong
# token), the URI \n the body [NUL the replies of its Redis steps]
GET, HEAD, POST, PUT, PATCH, DELETE = range(6)
OP = b'/_linegate/'


def op(method, path, body=b'', *replies):
    out = bytes([method]) + OP + path + b'\n' + body
    if replies:
        out += b'\0' + b''.join(replies)
    return out


HASH_WS = arr(bulk('plan'), bulk('mini'), bulk('createdAt'),
              bulk('2023-11-14T22:13:20.000Z'))
HASH_ACCT = arr(bulk('plan'), bulk('inbound_only'), bulk('daily_limit'),
                bulk('5'), bulk('monthly_limit'), bulk('x'))
operator = [
    op(GET, b'inventory?count=5&cursor=17', b'',
       arr(b':1\r\n', bulk('42'), b':7\r\n',
           arr(bulk('+12025550123'), bulk('+12025550124')))),
    op(GET, b'inventory', b'', arr(b':1\r\n', bulk('0'), b':0\r\n', arr())),
    op(GET, b'inventory?count=0'), op(GET, b'inventory?count=1001'),
    op(GET, b'inventory?count=x'), op(GET, b'inventory?cursor='),
    op(GET, b'inventory?cursor=12345678901234567890'),
    op(GET, b'inventory?cursor=1a'),
    op(POST, b'inventory', j({'numbers': ['+12025550123', '+447911123456']}),
       arr(b':1\r\n', b':2\r\n', b':9\r\n', b':0\r\n')),
    op(POST, b'inventory', j({'numbers': ['+12025550123', '+4420']})),
    op(POST, b'inventory', j({'numbers': []})),
    op(POST, b'inventory', j({'numbers': '+12025550123'})),
    op(POST, b'inventory', j({'numbers': [12025550123]})),
    op(DELETE, b'inventory/+12025550123', b'', b':1\r\n'),
    op(DELETE, b'inventory/+12025550123', b'', b':0\r\n'),
    op(DELETE, b'inventory/12025550123'),
    op(POST, b'lines/0123456789abcdef01234567/active',
       j({'phone': '+12025550123'}), bulk('org_1'),
       arr(b':1\r\n', bulk('org_1'),
           arr(bulk('provisioningStatus'), bulk('active')))),
    op(POST, b'lines/0123456789abcdef01234567/active', b'', bulk('org_1'),
       arr(b':-1\r\n', bulk('failed'))),
    op(POST, b'lines/0123456789abcdef01234567/active', b'', bulk('org_1'),
       arr(b':-2\r\n')),
    op(POST, b'lines/0123456789abcdef01234567/failed',
       j({'reason': '  no stock  '}), b'$-1\r\n'),
    op(POST, b'lines/0123456789abcdef01234567/failed', j({'reason': '  '})),
    op(POST, b'lines/0123456789abcdef01234567/health',
       j({'status': 'healthy'}), bulk('org_1'), b':1\r\n'),
    op(POST, b'lines/0123456789abcdef01234567/health',
       j({'status': 'ok'})),
    op(POST, b'lines/0123456789abcdef01234567/usage',
       j({'newConversations': 2, 'totalMessages': 5}), bulk('org_1'),
       arr(b':1\r\n', b':2\r\n', b':5\r\n')),
    op(POST, b'lines/0123456789abcdef01234567/usage',
       j({'newConversations': -1})),
    op(POST, b'lines/0123456789abcdef01234567/usage',
       j({'totalMessages': 1000001})),
    op(POST, b'lines/0123456789abcdef01234567/usage',
       j({'totalMessages': 1.5})),
    op(POST, b'lines/0123456789ABCDEF01234567/health'),
    op(GET, b'provisioning?count=1000&after=1700000000000-0', b'',
       arr(arr(bulk('1700000000000-1'),
               arr(bulk('id'), bulk('0123456789abcdef01234567'),
                   bulk('ws'), bulk('org_1'))))),
    op(GET, b'reconciliation?after=1-', b''),
    op(GET, b'reconciliation?after=-1', b''),
    op(GET, b'reconciliation/resolved', b'', b'$-1\r\n'),
    op(POST, b'reconciliation/run'),
    op(GET, b'workspaces/org_1', b'', HASH_WS),
    op(GET, b'workspaces/org_1', b'', arr()),
    op(PUT, b'workspaces/org_1',
       j({'plan': 'mini', 'subscriptionStatus': None,
          'stripeCustomerId': 'cus_1'}),
       arr(b':1\r\n', b':1\r\n', HASH_WS)),
    op(PUT, b'workspaces/org_1', j({'plan': None}), arr(b':-1\r\n')),
    op(PUT, b'workspaces/org_1', j({'plan': 'gold'})),
    op(PUT, b'workspaces/org_1', j({'stripeCustomerId': 'cus-1'})),
    op(PUT, b'workspaces/org%201', j({})),
    op(GET, b'workspaces/org_1/keys', b'',
       arr(bulk('key_0123456789abcdef'))),
    op(POST, b'workspaces/org_1/keys', b'', b':1\r\n', b'+OK\r\n'),
    op(POST, b'workspaces/org_1/keys', b'', b':-1\r\n'),
    op(DELETE, b'workspaces/org_1/keys/key_0123456789abcdef', b'',
       arr(b':1\r\n', bulk('ab' * 32)), b':1\r\n'),
    op(DELETE, b'workspaces/org_1/keys/key_0123'),
    op(GET, b'accounts/acct_1', b'', HASH_ACCT),
    op(PUT, b'accounts/acct_1',
       j({'plan': 'inbound_only', 'api_provision_daily': 5,
          'api_provision_monthly': None}),
       arr(b':1\r\n', b':0\r\n', HASH_ACCT)),
    op(PUT, b'accounts/acct_1', j({'plan': 'Inbound'})),
    op(POST, b'accounts/acct_1/credentials', b'',
       arr(b':1\r\n', arr(bulk('sbk_0123456789abcdef01234567'))),
       b':1\r\n'),
    op(POST, b'accounts/acct_1/credentials', b'', arr(b':0\r\n')),
    op(GET, b'nowhere'), op(PATCH, b'inventory'), op(GET, b''),
    op(GET | 0x80, b'inventory'),
    bytes([GET]) + b'/elsewhere/inventory\n',
]
write('operator', operator)


# redis_pubsub: the reader (0 revocations, 1 invalidations, 2 Sentinel
# +switch-master, 3 Sentinel query; 0x10 answered already), then RESP
DIGEST = '0123456789abcdef' * 4


def rd(which, *replies):
    return bytes([which]) + b''.join(replies)


def pmsg(channel, payload):
    return arr(bulk('pmessage'), bulk(channel), bulk(channel),
               payload if isinstance(payload, bytes) and
               payload[:1] in b'$*:-' else bulk(payload))


def inval(keys):
    return arr(bulk('message'), bulk('__redis__:invalidate'), keys)


REV = 'lg:keys:revoked'
SW = '+switch-master'
pubsub = [
    rd(0, pmsg(REV, DIGEST)),
    rd(0, pmsg(REV, DIGEST.upper())),
    rd(0, pmsg(REV, DIGEST[:63])),
    rd(0, pmsg(REV, DIGEST[:62] + 'zz')),
    rd(0, pmsg(REV, 'ab' * 32)),
    rd(0, pmsg(REV, b':1\r\n')),
    rd(0, arr(bulk('psubscribe'), bulk(REV), b':1\r\n'),
       pmsg(REV, DIGEST)),
    rd(0x10, arr(bulk('pong'), bulk(REV)), arr(bulk('PONG'), bulk(''))),
    rd(0, arr(bulk('pmessage'), bulk(REV))),
    rd(1, inval(arr(bulk('lg:{ws:org_1}'), bulk('lg:{ws:org_2}:lines'),
                    bulk('lg:line:abc')))),
    rd(1, inval(b'$-1\r\n')),
    rd(1, inval(b'*-1\r\n')),
    rd(1, arr(bulk('subscribe'), bulk('__redis__:invalidate'), b':1\r\n'),
       inval(arr(bulk('lg:{ws:}'), bulk('lg:{ws:a'), bulk('lg:{ws:'),
                 b':1\r\n', bulk('lg:{ws:x}y}')))),
    rd(2, arr(bulk('psubscribe'), bulk(SW), b':1\r\n'),
       pmsg(SW, 'mymaster 127.0.0.1 6379 127.0.0.1 6380')),
    rd(0x12, pmsg(SW, 'mymaster2 127.0.0.1 6379 127.0.0.1 6380'),
       pmsg(SW, 'mymaster'), pmsg(SW, 'other 1 2 3 4')),
    rd(0x12, arr(bulk('pong'), bulk(SW))),
    rd(3, arr(bulk('127.0.0.1'), bulk('6380'))),
    rd(3, arr(bulk('::1'), bulk('65535'))),
    rd(3, arr(bulk('127.0.0.1'), bulk('65536'))),
    rd(3, arr(bulk('127.0.0.1'), bulk('0'))),
    rd(3, arr(bulk('h' * 46), bulk('1'))),
    rd(3, arr(bulk(''), bulk('6379'))),
    rd(3, arr(bulk('127.0.0.1'), b':6379\r\n')),
    rd(3, b'*-1\r\n'),
    rd(3, b'-IDONTKNOW No such master with that name\r\n'),
    # +switch-master's new address: read, or not (appended: the numbers
    # of the seeds above stay)
    rd(0x12, pmsg(SW, 'mymaster 127.0.0.1 6379 ::1 65535'),
       pmsg(SW, 'mymaster 127.0.0.1 6379 127.0.0.1 65536'),
       pmsg(SW, 'mymaster 127.0.0.1 6379  127.0.0.1 6380'),
       pmsg(SW, 'mymaster 127.0.0.1 6379 127.0.0.1 6380 x'),
       pmsg(SW, 'mymaster '), pmsg(SW, 'mymaster 1 2 3 '),
       pmsg(SW, 'mymaster 1 2 ' + 'h' * 47 + ' 1')),
    rd(0x12, pmsg(SW, 'mymaster 127.0.0.1 6379 redis-2.example 6380'),
       pmsg(SW, b'$17\r\nmymaster 1 2 \x003 4\r\n')),
]
write('redis_pubsub', pubsub)


# limit: byte 0 (zones - 1 | on_error << 3 | 0x20 dry run | 0x40 headers
# off | 0x80 lease), byte 1 (first zone of the table | 0x08 refundable |
# 0x10 cluster | 0x20 shared memory | 0x40 status 599), byte 2 (requests -
# 1), then each request's byte (0x01 Redis down, 0x02 not sent, ms / 16
# << 2) and its zones' keys (a length byte, 0xff: two more), then RESP
OPEN, CLOSED, LOCAL = 0, 1 << 3, 2 << 3
DRY, NOHDR, LEASE = 0x20, 0x40, 0x80


def lkey(k):
    k = k.encode() if isinstance(k, str) else k
    if len(k) >= 0xff:
        return b'\xff' + bytes([len(k) >> 8, len(k) & 255]) + k
    return bytes([len(k)]) + k


def lreq(flags, *keys):
    return bytes([flags]) + b''.join(lkey(k) for k in keys)


def lim(b0, b1, reqs, *replies):
    return bytes([b0, b1, len(reqs) - 1]) + b''.join(reqs) + \
        b''.join(replies)


def gcra(a, rem, reset, retry):
    return arr(*(x if isinstance(x, bytes) else b':%d\r\n' % x
                 for x in (a, rem, reset, retry)))


limit = [
    lim(0, 0, [lreq(0, 'k1')], gcra(1, 49, 10, 0)),
    lim(0, 0, [lreq(0, 'k1')], gcra(0, 0, 510, 10)),
    lim(CLOSED, 0, [lreq(0, 'k1')], gcra(0, 0, 510, 10)),
    lim(CLOSED, 0, [lreq(0, 'k1')]),
    lim(CLOSED, 0, [lreq(0, 'k1')], b'-OOM command not allowed\r\n'),
    lim(LOCAL, 0, [lreq(1, 'k1'), lreq(1, 'k1'), lreq(1, 'k1')]),
    lim(LOCAL | 2, 2, [lreq(1, 'a', 'b', 'c'), lreq(2, 'a', 'b', 'c')]),
    lim(OPEN | DRY, 0, [lreq(0, 'k1')], gcra(0, 0, 510, 10)),
    lim(CLOSED | DRY, 0, [lreq(1, 'k1')]),
    lim(NOHDR, 0, [lreq(0, 'k1')], gcra(0, 0, 510, 10)),
    lim(0, 0x40, [lreq(0, 'k1')], gcra(0, 0, 510, 10)),
    # the cache: a rejection answered again, then after its retry
    lim(0, 2, [lreq(0, 'k'), lreq(4, 'k'), lreq(0xfc, 'k')],
        gcra(0, 0, 3600000, 720000), gcra(1, 0, 3600000, 0)),
    lim(0, 0x0a, [lreq(0, 'k'), lreq(4, 'k')],
        gcra(0, 0, 3600000, 720000), gcra(0, 0, 3600000, 720000)),
    # two zones: one refuses, the other is refunded; a pipeline lost
    lim(1, 0, [lreq(0, 'k', 'k')], gcra(1, 49, 10, 0),
        gcra(0, 0, 86400000, 864)),
    lim(1, 0, [lreq(0, 'k', 'k')], gcra(1, 49, 10, 0), b'-NOSCRIPT\r\n'),
    lim(1, 0, [lreq(0, 'k', 'k')], gcra(1, 49, 10, 0)),
    lim(7, 0, [lreq(0, *['k%d' % i for i in range(8)])],
        *[gcra(1, 5, 10, 0) for i in range(8)]),
    lim(7, 0, [lreq(0, *['k%d' % i for i in range(8)])],
        *[gcra(i % 2, 5, 10, 100) for i in range(8)]),
    lim(2, 0, [lreq(0, '', 'k', '')], gcra(1, 5, 10, 0)),
    lim(0, 0, [lreq(0, '')]),
    # keys: 64 and 65 bytes, spaces, braces, binary, long
    lim(0, 4, [lreq(0, 'x' * 64)], gcra(1, 0, 1, 0)),
    lim(0, 4, [lreq(0, 'x' * 65)], gcra(1, 0, 1, 0)),
    lim(0, 0, [lreq(0, 'a b')], gcra(1, 0, 1, 0)),
    lim(0, 0, [lreq(0, 'a{b}')], gcra(1, 0, 1, 0)),
    lim(0, 0, [lreq(0, b'\x00\xff\x7f\x01')], gcra(1, 0, 1, 0)),
    lim(0, 0, [lreq(0, 'k' * 3000)], gcra(1, 0, 1, 0)),
    # leases: granted 4, spent, refused with some left
    lim(LEASE, 0, [lreq(0, 'k'), lreq(0, 'k'), lreq(0, 'k'),
                   lreq(0, 'k')],
        gcra(1, 49, 10, 0), gcra(4, 40, 10, 0), gcra(0, 0, 10, 5)),
    lim(LEASE, 6, [lreq(0, 'k'), lreq(0, 'k'), lreq(0x40, 'k')],
        gcra(1, 9, 10, 0), gcra(10, 0, 10, 0), gcra(0, 0, 1000, 1000)),
    lim(LEASE | DRY, 0, [lreq(0, 'k'), lreq(0, 'k')], gcra(3, 0, 1, 0)),
    lim(LEASE | 1, 0, [lreq(0, 'k', 'k')], gcra(3, 0, 1, 0),
        gcra(3, 0, 1, 0)),
    # shapes: strings, short arrays, negative and huge counts, nil
    lim(0, 0, [lreq(0, 'k')], gcra(bulk('1'), bulk('49'), bulk('10'),
                                   bulk('0'))),
    lim(0, 0, [lreq(0, 'k')], gcra(bulk('1x'), 0, 0, 0)),
    lim(0, 0, [lreq(0, 'k')], arr(b':1\r\n', b':2\r\n', b':3\r\n')),
    lim(0, 0, [lreq(0, 'k')], arr(b':1\r\n', b':2\r\n', b':3\r\n',
                                  b':4\r\n', b':5\r\n')),
    lim(0, 0, [lreq(0, 'k')], gcra(-1, -5, -10, -20)),
    lim(0, 0, [lreq(0, 'k')], gcra(0, 0, 9223372036854775807,
                                   9223372036854775807)),
    lim(0, 0, [lreq(0, 'k')], gcra(0, 0, -9223372036854775808,
                                   -9223372036854775808)),
    lim(1, 0, [lreq(0, 'k', 'k')], gcra(1, 9223372036854775807,
                                        -9223372036854775808, 0),
        gcra(0, 0, 1, 9223372036854775807)),
    lim(0, 0, [lreq(0, 'k')], gcra(b'$-1\r\n', 0, 0, 0)),
    lim(0, 0, [lreq(0, 'k')], b'$-1\r\n'),
    lim(0, 0, [lreq(0, 'k')], b'*-1\r\n'),
    lim(0, 0, [lreq(0, 'k')], b':1\r\n'),
    lim(0, 0, [lreq(0, 'k')], b'+OK\r\n'),
    lim(0, 0, [lreq(0, 'k')], arr(b',1.5\r\n', b'#t\r\n', b'_\r\n',
                                  b':0\r\n')),
    lim(0, 0, [lreq(0, 'k')], gcra(bulk('9223372036854775808'), 0, 0, 0)),
]
write('limit', limit)


# reconcile_list: a byte (mode: 0 a purchase's LOOKUP, 1 a Lines add-on's,
# 2 INVOICES and refunds, 3 the payment_link sweep; 0x04 / 0x08 the
# entry's variant, 0x10 the sweep's paid one kept, 0x20 a draft), then
# pages: a status byte (0-3: 200, 4: 400, 5: 404, 6: 429, 7: 503, 0x80:
# no answer) and a body, NUL-terminated; the last page comes again
LOOKUP, LOOKUP_LINES, INVOICES, SWEEP = range(4)
LR = '0123456789abcdef01234567'


def pg(body, status=0):
    return bytes([status]) + (body if isinstance(body, bytes) else j(body)) \
        + b'\0'


def rl(mode, *pages):
    return bytes([mode]) + b''.join(pages)


def lst(items, more=False):
    return {'object': 'list', 'data': items, 'has_more': more}


def sub(i, worker='w_1', status='active'):
    return {'id': 'sub_%s' % i, 'status': status,
            'metadata': {'worker_id': worker}}


def inv(i, status='open', lr=LR, **kw):
    d = {'id': 'in_%s' % i, 'status': status,
         'metadata': {'line_request_id': lr},
         'hosted_invoice_url': 'https://pay.ex/%s' % i}
    d.update(kw)
    return d


def paid(i, **kw):
    d = {'id': 'in_%s' % i, 'status': 'paid', 'total': 500,
         'amount_paid': 500, 'payment_intent': 'pi_%s' % i}
    d.update(kw)
    return d


ERR = {'error': {'type': 'invalid_request_error', 'code': 'resource_missing',
                 'message': 'No such customer'}}
reconcile = [
    # a purchase: on the first page, on the third, absent, cancelled
    rl(LOOKUP, pg(lst([sub(1)]))),
    rl(LOOKUP, pg(lst([sub(1, 'w_2'), sub(2, 'w_3')], True)),
       pg(lst([sub(3, 'w_4')], True)), pg(lst([sub(4)]))),
    rl(LOOKUP, pg(lst([sub(1, 'w_2')]))),
    rl(LOOKUP, pg(lst([sub(1, status='canceled')])), pg(lst([]))),
    rl(LOOKUP | 4, pg(lst([sub(1, status='incomplete_expired')]))),
    rl(LOOKUP | 8, pg(lst([sub(1, status='past_due')]))),
    rl(LOOKUP, pg(lst([sub(1, 'w_2')], True))),
    rl(LOOKUP, pg(lst([], True))),
    rl(LOOKUP, pg(lst([{'id': 'sub 1', 'metadata': {}}], True))),
    rl(LOOKUP, pg(lst([{'id': 5}], True))),
    rl(LOOKUP, pg(lst([sub('1;x', 'w_1')]))),
    rl(LOOKUP, pg(ERR, 5)), rl(LOOKUP, pg(ERR, 4)), rl(LOOKUP, pg(b'', 7)),
    rl(LOOKUP, pg(b'x', 0x80)), rl(LOOKUP, pg(b'{"data":{}}')),
    rl(LOOKUP, pg(b'[]')), rl(LOOKUP, pg(b'{')),
    # a Lines add-on's invoice: open, draft, paid; reissue_lapsed
    rl(LOOKUP_LINES, pg(lst([inv(1)]))),
    rl(LOOKUP_LINES, pg(lst([inv(1, 'draft')]))),
    rl(LOOKUP_LINES, pg(lst([inv(1, 'paid')]))),
    rl(LOOKUP_LINES, pg(lst([inv(1, lr='x'), inv(2, 'void')], True)),
       pg(lst([inv(3)]))),
    rl(LOOKUP_LINES | 4, pg(lst([inv(1, 'draft'), inv(2)]))),
    rl(LOOKUP_LINES | 0x24, pg(lst([inv(1, 'draft')]))),
    rl(LOOKUP_LINES | 8, pg(lst([inv(1, 'paid'), inv(2)], True)),
       pg(lst([inv(3, 'uncollectible')]))),
    rl(LOOKUP_LINES | 0x18, pg(lst([inv('named', 'paid'), inv(2)]))),
    rl(LOOKUP_LINES | 8, pg(lst([]))),
    # the paid invoices of a purchase undone, then their refunds
    rl(INVOICES, pg(lst([paid(2), paid(1, billing_reason=
                                       'subscription_create')])),
       pg({'id': 're_1', 'status': 'succeeded'})),
    rl(INVOICES, pg(lst([paid(i) for i in range(5)], True)),
       pg(lst([paid(i) for i in range(5, 10)], True)),
       pg(lst([paid(10)]))),
    rl(INVOICES, pg(lst([paid(1, status='open')], True)),
       pg(lst([paid(2)]))),
    rl(INVOICES, pg(lst([paid(1, total=-100)]))),
    rl(INVOICES, pg(lst([paid(1, amount_paid=0)])),),
    rl(INVOICES, pg(lst([paid(1, payment_intent=None, payments={'data': [
        {'status': 'paid', 'payment': {'payment_intent': 'pi_9'}}]})]))),
    rl(INVOICES, pg(lst([paid(1, payment_intent=None, payments={'data': [
        {'status': 'open', 'payment': {'charge': {'id': 'ch_9'}}},
        {'status': 'paid', 'payment': {'charge': {'id': 'ch_8'}}}]})]))),
    rl(INVOICES, pg(lst([paid(1, payment_intent={'id': 'pi x'})]))),
    rl(INVOICES, pg(lst([paid(1, payment_intent=None)]))),
    rl(INVOICES, pg(lst([paid(1)])),
       pg({'error': {'type': 'invalid_request_error',
                     'code': 'charge_already_refunded'}}, 4),
       pg(lst([{'id': 're_2', 'status': 'pending'}]))),
    rl(INVOICES, pg(lst([paid(1)])),
       pg({'id': 're_1', 'status': 'pending'}),
       pg(lst([{'id': 're_1', 'status': 'succeeded'}]))),
    rl(INVOICES, pg(lst([paid(1)])),
       pg({'id': 're_1', 'status': 'failed'})),
    rl(INVOICES, pg(lst([], True))),
    rl(INVOICES, pg(lst([paid(1, status='open')], True))),
    rl(INVOICES, pg(lst([{'id': 'in 1', 'status': 'paid'}]))),
    rl(INVOICES, pg(ERR, 4)),
    # the payment_link sweep: found, paid kept, pages, a paid one again
    rl(SWEEP, pg(lst([inv(1), inv('old', 'open'), inv(2, 'void')]))),
    rl(SWEEP, pg(lst([inv(1, lr='x')], True)), pg(lst([inv(2)], True)),
       pg(lst([inv(3, 'paid')]))),
    rl(SWEEP | 4, pg(lst([inv(1, 'paid'), inv(2, 'paid')]))),
    rl(SWEEP | 0x10, pg(lst([inv(1, 'paid')]))),
    rl(SWEEP, pg(lst([inv(1)], True))),
    rl(SWEEP, pg(lst([{'id': 'in_1', 'status': 5,
                       'metadata': {'line_request_id': LR}}]))),
    rl(SWEEP, pg(lst([inv('1 2')]))),
    rl(SWEEP, pg(lst([], True))),
    rl(SWEEP, pg(ERR, 4)),
]
write('reconcile_list', reconcile)
