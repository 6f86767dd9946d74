"""A labelled PII test set: positives in realistic contexts, and hard negatives.

Each positive is ``(detector, text, value)``: the detector that should fire and
the exact substring it should redact. Structured values that have check digits
(cards, IBANs) are well-known published test values plus values generated here
with their own check digits; secrets are generated at random, so none is real.
"""

from __future__ import annotations

import base64
import json
import random
import string

Case = tuple[str, str, str]
_RNG = random.Random(20240315)


def _in(contexts: list[str], values: list[str], detector: str) -> list[Case]:
    """Place each value in the next context, cycling through the contexts."""
    return [(detector, contexts[i % len(contexts)].format(v), v) for i, v in enumerate(values)]


def _luhn_digit(body: str) -> str:
    total = 0
    for i, c in enumerate(reversed(body)):
        d = int(c) * (1 if i % 2 else 2)
        total += d - 9 if d > 9 else d
    return str(-total % 10)


def _group(number: str, sizes: tuple[int, ...], sep: str) -> str:
    parts, at = [], 0
    for size in sizes:
        parts.append(number[at : at + size])
        at += size
    return sep.join(parts)


def _rand(alphabet: str, n: int) -> str:
    return "".join(_RNG.choice(alphabet) for _ in range(n))


EMAILS = _in(
    [
        "Email me at {} for the slides.",
        "From: {}",
        "Jane Doe <{}> wrote:",
        "Contact: {}.",
        "mailto:{}",
        '{{"email": "{}", "plan": "pro"}}',
        "Please send the invoice to {} before Friday",
        "(reach out via {}, she handles refunds)",
        "cc {}, thanks!",
        "Reply-To: {}\nSubject: re: meeting",
    ],
    [
        "alice@example.com", "bob.smith@mail.example.co.uk", "carol+newsletter@gmail.com",
        "dev-team@corp.example.org", "j_doe42@university.edu", "first.last@sub.domain.example.io",
        "support@tuneforge.ai", "x@y.co", "UPPER.Case@Example.COM", "maria.garcia@empresa.es",
        "hr@company.museum", "noreply@notifications.github.com", "user%relay@example.net",
        "1234567@qq.com", "sales@acme-widgets.com", "o.connor@lawfirm.ie", "info@city.gov",
        "a.b.c.d@e.f.example.com", "tanaka.hiroshi@example.jp", "li.wei@example.cn",
        "jean-pierre@exemple.fr", "admin@localhost.localdomain", "security@bank.example",
        "test.email+alias@domain.travel", "ceo@startup.xyz", "phd_student@lab.ac.uk",
        "name.surname@outlook.com", "pat@iana.org", "ops-alerts@pagerduty.example.com",
        "k.nguyen@hospital.org.au",
    ],
    "email",
)  # fmt: skip

PHONES = _in(
    [
        "Call me on {} after 6pm.",
        "Tel: {}",
        "phone: {}",
        "Mobile {} (WhatsApp too)",
        "You can reach the front desk at {}.",
        '{{"name": "Ana", "phone": "{}"}}',
        "Emergency contact - {}, ask for Sam",
    ],
    [
        "+1 (555) 123-4567", "+1-212-555-0147", "+1 415 555 2671", "+14155552671",
        "+44 20 7946 0958", "+44 (0)20 7946 0958", "+44 7700 900123", "+49 30 12345678",
        "+49 (0)89 1234567", "+33 1 23 45 67 89", "+33 6 12 34 56 78", "+81-3-1234-5678",
        "+81 90-1234-5678", "+91 98765 43210", "+86 138 0013 8000", "+61 2 9374 4000",
        "+61 412 345 678", "+55 11 91234-5678", "+34 612 34 56 78", "+39 06 1234 5678",
        "+7 495 123-45-67", "+27 21 123 4567", "+353 1 234 5678", "+31 20 123 4567",
        "(555) 123-4567", "212-555-0147", "415.555.2671", "1-800-555-0199", "020 7946 0958",
        "07700 900123", "030 12345678", "01 23 45 67 89", "0412 345 678", "03-1234-5678",
    ],
    "phone",
)  # fmt: skip


def _cards() -> list[str]:
    published = [
        "4111 1111 1111 1111", "4111-1111-1111-1111", "4111111111111111", "4012888888881881",
        "4222222222222", "5555 5555 5555 4444", "5105105105105100", "2223 0031 2200 3222",
        "3782 822463 10005", "371449635398431", "3714-496353-98431", "6011 1111 1111 1117",
        "6011000990139424", "3530 1113 3330 0000", "3566002020360505", "3056 930902 5904",
        "38520000023237", "6200 0000 0000 0005",
    ]  # fmt: skip
    generated = []
    for prefix, length in [("4", 16), ("51", 16), ("53", 16), ("2720", 16), ("34", 15),
                           ("6011", 16), ("65", 16), ("3528", 16), ("36", 14), ("62", 19),
                           ("4", 19), ("55", 16)]:  # fmt: skip
        body = prefix + _rand(string.digits, length - len(prefix) - 1)
        number = body + _luhn_digit(body)
        sizes = {15: (4, 6, 5), 14: (4, 6, 4), 19: (4, 4, 4, 4, 3)}.get(length, (4, 4, 4, 4))
        generated.append(_group(number, sizes, " -"[len(generated) % 2]))
    return published + generated


CARDS = _in(
    [
        "Card number: {}",
        "Please charge {} exp 12/27",
        "cc={}",
        "My Visa is {}, CVV is on the back.",
        '{{"card": "{}", "amount": 4999}}',
        "Paid with card {} yesterday",
    ],
    _cards(),
    "credit_card",
)

IBANS = _in(
    [
        "IBAN: {}",
        "Please wire the deposit to {} (BIC DEUTDEFF).",
        "Kontonummer {}",
        "account {} - reference INV-2041",
        '{{"iban": "{}"}}',
    ],
    [
        "DE89 3704 0044 0532 0130 00", "DE89370400440532013000", "GB82 WEST 1234 5698 7654 32",
        "GB29 NWBK 6016 1331 9268 19", "FR14 2004 1010 0505 0001 3M02 606",
        "FR7630006000011234567890189", "NL91 ABNA 0417 1643 00", "ES91 2100 0418 4502 0005 1332",
        "IT60 X054 2811 1010 0000 0123 456", "CH93 0076 2011 6238 5295 7", "BE68 5390 0754 7034",
        "AT61 1904 3002 3457 3201", "PL61 1090 1014 0000 0712 1981 2874",
        "SE45 5000 0000 0583 9825 7466", "NO93 8601 1117 947", "DK50 0040 0440 1162 43",
        "FI21 1234 5600 0007 85", "IE29 AIBK 9311 5212 3456 78", "PT50 0002 0123 1234 5678 9015 4",
        "LU28 0019 4006 4475 0000", "GR16 0110 1250 0000 0001 2300 695",
        "SA03 8000 0000 6080 1016 7519", "AE07 0331 2345 6789 0123 456",
        "CZ65 0800 0000 1920 0014 5399", "HU42 1177 3016 1111 1018 0000 0000",
        "RO49 AAAA 1B31 0075 9384 0000", "TR33 0006 1005 1978 6457 8413 26",
        "BR97 0036 0305 0000 1000 9795 493P 1", "IL62 0108 0000 0009 9999 999",
        "HR12 1001 0051 8630 0016 0",
    ],
    "iban",
)  # fmt: skip

IPV4 = _in(
    [
        "ssh admin@{}",
        "Server IP: {}",
        "curl http://{}:8080/health",
        "Accepted connection from {} port 51234",
        "[{}] GET /index.html 200",
        "Allow from {}",
        '{{"client_ip": "{}"}}',
        "ping {} -c 4",
        "X-Forwarded-For: {}",
    ],
    [
        "192.168.1.1", "10.0.0.1", "172.16.254.1", "8.8.8.8", "203.0.113.42", "198.51.100.7",
        "127.0.0.1", "255.255.255.0", "0.0.0.0", "100.64.0.1", "169.254.169.254", "1.1.1.1",
        "52.94.236.248", "34.117.59.81", "185.199.108.153", "140.82.112.3", "17.253.144.10",
        "91.198.174.192", "23.45.67.89", "104.16.132.229", "151.101.1.69", "13.107.42.14",
        "192.0.2.146", "45.33.32.156", "66.249.66.1", "207.46.13.5", "8.26.56.26", "9.9.9.9",
        "64.233.160.0", "216.58.214.206",
    ],
    "ipv4",
)  # fmt: skip

IPV6 = _in(
    [
        "listen [{}]:8080;",
        "inet6 {}/64 scope global",
        "Connecting to {} ...",
        "AAAA record: {}",
        '{{"ip": "{}"}}',
        "ping6 {}",
        "blocked {} after 5 failed logins",
    ],
    [
        "2001:db8::1", "2001:0db8:85a3:0000:0000:8a2e:0370:7334", "fe80::1ff:fe23:4567:890a",
        "::1", "::ffff:192.168.1.1", "2001:db8:0:0:1:0:0:1", "2606:4700:4700::1111",
        "2001:4860:4860::8888", "fe80::1%eth0", "2001:db8::", "ff02::1", "2a00:1450:4001:82b::200e",
        "2001:db8:85a3::8a2e:370:7334", "fd12:3456:789a:1::1", "2620:fe::fe",
        "2001:db8:a0b:12f0::1", "64:ff9b::192.0.2.33", "2400:cb00:2048:1::c629:d7a2",
        "2a03:2880:f12f:83:face:b00c::25de", "2001:67c:2e8:22::c100:68b",
        "2607:f8b0:4005:80a::200e", "2001:db8:1234:5678:9abc:def0:1234:5678",
        "fe80::a00:27ff:fe4e:66a1", "2001:41d0:8:e8ad::1", "2a01:4f8:c17:b8f::2",
        "2001:db8:3333:4444:5555:6666:7777:8888", "2001:db8:3333:4444:CCCC:DDDD:EEEE:FFFF",
        "2001:db8::123.123.123.123", "fc00::42", "2804:14c:5b00::1",
    ],
    "ipv6",
)  # fmt: skip


def _ssns() -> list[tuple[str, str]]:
    """(context, value) pairs: dashed, spaced, and bare nine digits behind a label."""
    dashed = ["SSN: {}", "my social is {}", "The applicant's number ({}) was verified.",
              '{{"ssn": "{}"}}', "SS# {}"]  # fmt: skip
    labelled = ["SSN: {}", "ssn={}", "Social Security Number {}", '{{"SSN": "{}"}}']
    pairs = []
    for i in range(33):
        area = _RNG.choice([a for a in range(1, 900) if a != 666])
        group, serial = _RNG.randint(1, 99), _RNG.randint(1, 9999)
        digits = f"{area:03d}{group:02d}{serial:04d}"
        if i % 3 == 2:
            pairs.append((labelled[i % len(labelled)], digits))
        else:
            sep = "-" if i % 3 == 0 else " "
            pairs.append((dashed[i % len(dashed)], sep.join([digits[:3], digits[3:5], digits[5:]])))
    return pairs


SSNS = [("ssn", context.format(value), value) for context, value in _ssns()]

_KEY_CHARS = string.ascii_uppercase + "234567"
AWS_KEYS = _in(
    [
        "aws_access_key_id = {}",
        "export AWS_ACCESS_KEY_ID={}",
        '{{"AccessKeyId": "{}", "Expiration": "2024-03-15T10:00:00Z"}}',
        "The key id {} was rotated yesterday.",
        "aws configure set aws_access_key_id {}",
    ],
    ["AKIAIOSFODNN7EXAMPLE"]
    + [_RNG.choice(["AKIA", "ASIA"]) + _rand(_KEY_CHARS, 16) for _ in range(29)],
    "aws_access_key",
)

_B64 = string.ascii_letters + string.digits + "+/"
AWS_SECRETS = _in(
    [
        "aws_secret_access_key = {}",
        "AWS_SECRET_ACCESS_KEY={}",
        '"SecretAccessKey": "{}",',
        "aws_secret_access_key: {}",
        "secret_access_key => '{}'",
    ],
    ["wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"] + [_rand(_B64, 40) for _ in range(29)],
    "aws_secret_key",
)


def _b64url(data: dict[str, object] | bytes) -> str:
    raw = data if isinstance(data, bytes) else json.dumps(data).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _jwts() -> list[str]:
    headers = [{"alg": "HS256", "typ": "JWT"}, {"alg": "RS256", "typ": "JWT", "kid": "k1"},
               {"typ": "JWT", "alg": "ES256"}, {"alg": "none"}, {"alg": "HS512"}]  # fmt: skip
    tokens = []
    for i in range(30):
        header = headers[i % len(headers)]
        payload = {"sub": str(_RNG.randint(10**9, 10**10)), "iat": 1516239022 + i}
        if i % 2:
            payload["name"] = "John Doe"
        signature = "" if header["alg"] == "none" else _b64url(_RNG.randbytes(32))
        tokens.append(f"{_b64url(header)}.{_b64url(payload)}.{signature}")
    return tokens


JWTS = _in(
    [
        "Authorization: Bearer {}",
        "token={}",
        "Cookie: session={}; Path=/",
        '{{"id_token": "{}"}}',
        "here is my jwt {} - it expires soon",
    ],
    _jwts(),
    "jwt",
)


def _private_keys() -> list[tuple[str, str]]:
    """(text, block) pairs in PEM, CRLF, JSON-escaped and cut-short forms."""
    labels = ["RSA PRIVATE KEY", "PRIVATE KEY", "EC PRIVATE KEY", "OPENSSH PRIVATE KEY",
              "DSA PRIVATE KEY", "ENCRYPTED PRIVATE KEY", "PGP PRIVATE KEY BLOCK"]  # fmt: skip
    cases = []
    for i in range(30):
        label = labels[i % len(labels)]
        body = [_rand(_B64, 64) for _ in range(_RNG.randint(3, 8))] + [_rand(_B64, 20) + "=="]
        begin, end = f"-----BEGIN {label}-----", f"-----END {label}-----"
        if i % 5 == 0:
            block = "\r\n".join([begin, *body, end])
            text = f"key.pem contents:\r\n{block}\r\n"
        elif i % 5 == 1:
            block = "\\n".join([begin, *body, end])
            text = f'{{"type": "service_account", "private_key": "{block}\\n"}}'
        elif i % 5 == 2 and "PGP" not in label:
            block = "\n".join([begin, *body])  # pasted without its END line
            text = f"here is the start of it:\n{block}\n\nis this enough?"
        else:
            block = "\n".join([begin, *body, end])
            text = f"```\n{block}\n```\nplease don't share"
        cases.append((text, block))
    return cases


PRIVATE_KEYS = [("private_key", text, block) for text, block in _private_keys()]

_TOKEN_CHARS = string.ascii_letters + string.digits
URL_CREDENTIALS = _in(
    [
        "DATABASE_URL={}",
        "Connect with {} and run the migration.",
        "export REDIS_URL='{}'",
        "pip install --index-url {} private-pkg",
        "git clone {}",
    ],
    [
        "postgres://admin:s3cr3t@db.internal:5432/app", "mysql://root:hunter2@mysql.local/shop",
        "https://user:pa55w0rd@example.com/private", "ftp://anonymous:guest@ftp.example.org/pub",
        "redis://:p4ssw0rd@cache.example.com:6379/0", "amqp://guest:guest@rabbit.example.com:5672/",
        "mongodb+srv://dbUser:Xk9%40pL2@cluster0.ab1cd.mongodb.net/test",
        "smtp://mailer:Tr0ub4dor@smtp.example.com:587", "http://admin:admin@router.local/",
        "sftp://backup:b4ckup!2024@files.example.net/backups",
        "https://oauth2:glpat-x7Yk2LmN9pQr4StV@gitlab.example.com/group/project.git",
        "socks5://proxyuser:proxypass@proxy.example.com:1080", "http://user:pass@localhost:8000",
        "wss://bot:t0k3n@chat.example.io/socket", "jdbc:postgresql://etl:EtL2024@warehouse/dw",
        "https://deploy:hunter22@pypi.example.com/simple",
        "postgresql://app_user:Zx8kLm2q@pg.example.com/app",
        "rediss://default:AbC123xyz@eu1-redis.example.cloud:6380",
        "https://ci-bot:c1b0tP4ss@nexus.example.com/repository/npm/",
        "http://svc:changeme@10.internal.example/api", "ssh://git:deploy-key-pw@git.example.com/x",
        "imap://jane:mailpass1@imap.example.com", "couchdb://admin:relax@couch.example.com:5984",
        "https://token:abc123def456@registry.example.io/v2/",
        "mssql://sa:Passw0rd!@sqlserver.example.com:1433/master",
        "nats://user:secretpw@nats.example.com:4222", "ldap://cn=admin:ldappw@ldap.example.com",
        "http://alice:wonderland@proxy.corp.example:3128",
        "s3://minio:minio123@storage.example.com/bucket",
        "kafka://producer:pr0duc3r@broker.example.com:9092",
    ],
    "url_credentials",
)  # fmt: skip

# Hosts and paths above stay clear of IP addresses and e-mails, so each text holds one value.
URL_CREDENTIALS = [(d, t, v.split("://", 1)[1].rsplit("@", 1)[0]) for d, t, v in URL_CREDENTIALS]

BEARERS = _in(
    [
        "Authorization: Bearer {}",
        "curl -H 'Authorization: Bearer {}' https://api.example.com/v1/me",
        "headers = {{'Authorization': 'Bearer {}'}}",
        "use bearer {} for the staging API",
    ],
    [_rand(_TOKEN_CHARS + "-._~", _RNG.randint(24, 64)) for _ in range(30)],
    "bearer_token",
)

API_KEYS = _in(
    [
        "api_key={}",
        "API_KEY: {}",
        "apiKey: '{}'",
        "X-Api-Key: {}",
        'client_secret = "{}"',
        "access_token={}&scope=read",
        "STRIPE_SECRET={}",
    ],
    [_rand(_TOKEN_CHARS, _RNG.randint(24, 48)) for _ in range(30)],
    "api_key",
)

SERVICE_TOKENS = _in(
    ["my token is {}", "OPENAI_API_KEY={}", "export GITHUB_TOKEN={}", '"token": "{}"'],
    [
        prefix + _rand(_TOKEN_CHARS, n)
        for prefix, n in [("ghp_", 36), ("gho_", 36), ("github_pat_", 40), ("sk-", 48),
                          ("sk-proj-", 40), ("sk_live_", 24), ("rk_test_", 24), ("hf_", 34),
                          ("AIza", 35), ("xoxb-", 40)] * 3
    ],
    "service_token",
)  # fmt: skip

POSITIVES: list[Case] = (
    EMAILS + PHONES + CARDS + IBANS + IPV4 + IPV6 + SSNS + AWS_KEYS + AWS_SECRETS + JWTS
    + PRIVATE_KEYS + URL_CREDENTIALS + BEARERS + API_KEYS + SERVICE_TOKENS
)  # fmt: skip


def _non_luhn_16() -> list[str]:
    numbers = []
    for prefix in ["4", "51", "4", "55", "6011", "4", "52", "65", "3528", "4"]:
        body = prefix + _rand(string.digits, 15 - len(prefix))
        wrong = str((int(_luhn_digit(body)) + _RNG.randint(1, 9)) % 10)
        numbers.append(body + wrong)
    return numbers


_NON_LUHN = _non_luhn_16()
HARD_NEGATIVES: list[tuple[str, str]] = [
    ("version", "Upgrade to version 1.2.3.4 before Friday."),
    ("version", "pip install somepkg==2.31.0.1"),
    ("version", "Microsoft Windows [Version 10.0.19045.3570]"),
    ("version", "Windows 10.0.19045 build"),
    ("version", "Released v1.2.3.4 today"),
    ("version", "firmware 4.2.1.0 is out, please update"),
    ("version", "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/120.0.0.0 Safari"),
    ("version", "Bumped 1.2.3.3 -> 1.2.3.4 in setup.cfg"),
    ("version", "Upgraded from 6.1.7601.17514 to 10.0.0.1 release"),
    ("version", "node v18.17.1 and python 3.11.4"),
    ("version", "requires libfoo>=1.0.0.2,<2"),
    ("version", "Build 22621.2428, kernel 5.15.0-91-generic"),
    ("date", "Meeting on 2024-03-15 at 14:30."),
    ("date", "Due 15/03/2024, paid 03.15.2024 and 15.03.2024"),
    ("date", "Timestamp 2024-03-15T14:30:00+01:00"),
    ("date", "Date: Mon, 15 Mar 2024 14:30:00 +0000"),
    ("date", "logs from 20240315 to 20240322"),
    ("date", "2024/03/15 14:30:00.123456 INFO started"),
    ("date", "born 01-02-1990, moved 05 11 2023"),
    ("time", "Elapsed 12:30:45 (was 09:15), best 23:59:59.999"),
    ("time", "1:23:45 PM, lap 01:02:03:04"),
    ("order id", "Order #A123-456-789 has shipped."),
    ("order id", "Your order ORD-2024-000123 is confirmed."),
    ("order id", "Amazon order 112-4567890-1234567"),
    ("order id", "PO-88812-2024, invoice INV-2024-00042, ticket #48213"),
    ("order id", "Order number 1045-2291-3385"),
    ("tracking", "UPS tracking 1Z999AA10123456784"),
    ("tracking", "USPS 9400 1000 0000 0000 0000 00"),
    ("tracking", "USPS 9405511899223197428490 delivered"),
    ("tracking", "DHL JD014600006281230704, FedEx 7489 2345 6789"),
    ("uuid", "request id 123e4567-e89b-12d3-a456-426614174000"),
    ("uuid", "run 550e8400-e29b-41d4-a716-446655440000 finished"),
    ("uuid", "UUID('6ba7b810-9dad-11d1-80b4-00c04fd430c8')"),
    ("hash", "commit 3f786850e387550fdab836ed7e6dc881de23001b"),
    ("hash", "fixed in a1b2c3d (see 9fceb02)"),
    ("hash", "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
    ("hash", "md5 d41d8cd98f00b204e9800998ecf8427e"),
    ("hash", "blake2b 786a02f742015903c6c6fd852552d272912f4740e15847618a86e217f71f5419"),
    ("price", "Total: $1,234.56 (was $1,499.00)"),
    ("price", "Preis € 1.299,00 inkl. MwSt, or USD 2,499,999.99"),
    ("price", "£12.50 per month, 4111 subscribers"),
    ("isbn", "ISBN 978-3-16-148410-0"),
    ("isbn", "ISBN-10: 0-306-40615-2"),
    ("isbn", "see 978-0-596-52068-7 and ISBN 9780306406157"),
    *[("non-luhn 16", f"Card number: {n}") for n in _NON_LUHN[:5]],
    *[("non-luhn 16", f"ref {n[:4]} {n[4:8]} {n[8:12]} {n[12:]}") for n in _NON_LUHN[5:]],
    ("product code", "Part number 555-0199-A3"),
    ("product code", "SKU: 123-456-7890-XL"),
    ("product code", "P/N 41-2234-9987"),
    ("product code", "Model TX-555-1234 in stock"),
    ("product code", "item 800-1234-5678-01"),
    ("product code", "Cat# 555-123-4567-B"),
    ("ip-like", "999.1.1.1 is not an address, nor 192.168.001.001 or 1.2.3.4.5"),
    ("ip-like", "MAC 00:1A:2B:3C:4D:5E"),
    ("code", "std::vector<int> v; Foo::Bar::baz();"),
    ("code", "evens = arr[::2]; odds = arr[1::2]"),
    ("code", "length :: [a] -> Int"),
    ("email-like", "assets/icon@2x.png and logo@3x.jpg"),
    ("email-like", "npm install lodash@4.17.21 react@18.2.0"),
    ("email-like", "git clone git@github.com:org/repo.git"),
    ("email-like", "thanks @username, see @org/team"),
    ("secret-like", "He was the bearer of bad news."),
    ("secret-like", "Authorization: Bearer <token>"),
    ("secret-like", 'curl -H "Authorization: Bearer $TOKEN" https://api.example.com'),
    ("secret-like", "api_key=YOUR_API_KEY_HERE"),
    ("secret-like", "password: correcthorsebatterystaple"),
    ("secret-like", "token = os.environ['TOKEN']"),
    ("secret-like", "SECRET_KEY = settings.SECRET_KEY"),
    ("secret-like", "password = settings.DB_PASSWORD_V2; token: self.config.auth_token2"),
    ("secret-like", "max_tokens: 4096, token_count=123456789012345678"),
    ("secret-like", "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE\n"),
    ("secret-like", "-----BEGIN CERTIFICATE-----\nMIIDdzCCAl+gAwIBAgIEAgAAuTANBgkqhkiG\n"),
    ("secret-like", "AKIA is the prefix of long-term AWS key ids"),
    ("secret-like", "scikit-learn (sk-learn) and sk-1234"),
    ("url", "https://example.com:8443/path?user=alice&page=2"),
    ("url", "http://localhost:8080 and ssh://git@github.com/org/repo"),
    ("ssn-like", "000-12-3456, 666-12-3456, 900-12-3456"),
    ("ssn-like", "123-00-4567 and 123-45-0000"),
    ("ssn-like", "ZIP 12345-6789, room 123-45"),
    ("iban-like", "DE89 3704 0044 0532 0130 01"),
    ("iban-like", "GB00 WEST 1234 5698 7654 32 and XX12 3456 7890 1234 56"),
    ("number", "population 8,045,311,447; 1,000,000 rows; N = 6.022e23"),
    ("number", "π ≈ 3.14159265358979, e ≈ 2.718281828459045"),
    ("number", "coordinates 40.7128, -74.0060"),
    ("number", "epoch 1700000000, in ms 1700000000000"),
    ("number", "snowflake 1234567890123456789"),
    ("phone-like", "Call 911 or ext. 4567; room 101-B; flight UA 1234"),
    ("phone-like", "credit score 720-850, color #FF5733"),
    ("phone-like", "Score: +1234 points"),
]
