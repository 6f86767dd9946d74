"""Generate the quickstart fine-tuning dataset ``examples/data/support_tickets.jsonl``.

Each record is an OpenAI-style chat: a fixed system prompt, a synthetic customer-support ticket
from the user, and the assistant's routing decision as compact JSON, for example
``{"team": "billing", "priority": "urgent"}``.

The team is determined by what the ticket is about; the priority by explicit cues in the text
(urgency words -> ``urgent``, relaxed wording -> ``low``, no cue -> ``normal``). Greetings,
details, extra context and sign-offs vary at random so that a model has to learn the mapping from
content words rather than memorise strings.

The script uses only the standard library and a fixed seed, so running it always writes the same
bytes::

    python examples/make_quickstart_data.py
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

SEED = 20240611
N_RECORDS = 800
DEFAULT_OUT = Path(__file__).resolve().parent / "data" / "support_tickets.jsonl"
SYSTEM_PROMPT = 'Route the support ticket. Reply with JSON only: {"team": ..., "priority": ...}.'
TEAMS = ("billing", "technical", "account", "shipping", "sales")
PRIORITIES = ("low", "normal", "urgent")

# What each team's tickets are about. Placeholders are filled from _details().
ISSUES: dict[str, list[str]] = {
    "billing": [
        "I was charged twice for {order}.",
        "My card was charged two times for the same {plan} subscription {date}.",
        "There is a duplicate payment of {amount} on my bank statement.",
        "I would like a refund for {order}, I returned the {product} {date}.",
        "I requested a refund {date} and the money still hasn't reached my account.",
        "The invoice for {order} shows {amount}, which is not what I paid.",
        "My invoice has the wrong company name and VAT number on it.",
        "My card keeps getting declined when I try to pay for the {plan} plan.",
        "I was billed {amount} even though I cancelled my subscription {date}.",
        "Could you send me a receipt for {order}? I need it for my expense report.",
        "You charged me for the {plan} plan but I am on the {plan2} plan.",
        "There is a charge of {amount} on my credit card that I don't recognise.",
        "I was charged a late payment fee of {amount} although I paid on time.",
        "The coupon I used was not applied and I was billed the full {amount}.",
        "Please update the billing address that appears on my invoices.",
        "My annual renewal took {amount} from my card without any warning.",
    ],
    "technical": [
        "The {app} crashes every time I open it on my {device}.",
        "I keep getting {error} when I try to save my work in the {app}.",
        "Sync between my {device} and the {app} stopped working {date}.",
        "The {app} freezes on the loading screen and never gets past it.",
        "Notifications from the {app} no longer arrive on my {device}.",
        "Exporting a report to PDF produces an empty file.",
        "The {app} has become extremely slow, every page takes a minute to load.",
        "Since the latest update the {app} won't start on my {device}.",
        "I get {error} whenever I upload a file larger than {size} MB.",
        "Search returns no results, even for documents I know are there.",
        "Our API integration has been returning {error} on every request since {date}.",
        "My {product} won't pair with the companion app over Bluetooth.",
        "In dark mode the text in the {app} is unreadable.",
        "The calendar integration creates a duplicate of every event I add.",
        "Images don't load in the {app}, I only see grey boxes.",
        "The {app} logs a bug report and closes whenever I press the share button.",
    ],
    "account": [
        "I can't reset my password, the reset email never arrives.",
        "I'm locked out of my account after too many failed login attempts.",
        "Please change the email address on my account to {email}.",
        "I would like to delete my account and all of my personal data.",
        "How do I change the username on my profile?",
        "My two-factor codes are rejected since I switched to a new {device}.",
        "I got a sign-in alert from {city} and I think someone else accessed my account.",
        "I want to transfer ownership of my account to a colleague.",
        "Signing in with Google now says my account doesn't exist.",
        "Can you merge my two accounts, {email} and my old personal one?",
        "My account was deactivated {date} and I don't know why.",
        "I need to update the phone number used to verify my account.",
        "I forgot which email address I used to sign up.",
        "Please send me a copy of all the personal data you hold on my account.",
        "My profile settings keep reverting after I log out.",
    ],
    "shipping": [
        "My parcel for {order} was supposed to arrive {date} but it still isn't here.",
        "The tracking number for {order} hasn't updated in {days} days.",
        "I entered the wrong delivery address for {order}, please send it to {city} instead.",
        "The {product} arrived damaged, the box was completely crushed.",
        "I ordered the {product} but received a different item in the box.",
        "{carrier} says my package was delivered but there is nothing at my door.",
        "Only half of {order} arrived, the {product} is missing from the box.",
        "My package has been stuck at customs in {city} for {days} days.",
        "The courier left my parcel in the rain and the {product} is soaked.",
        "Can I change the delivery date for {order}? I will be away that week.",
        "{order} shows as shipped but {carrier} has no record of the parcel.",
        "The {product} came without the power cable that should be in the box.",
        "My parcel was sent back to the warehouse even though my address is correct.",
        "The delivery for {order} went to my old address in {city}.",
        "Tracking for {order} says delivery failed, but nobody rang the doorbell.",
    ],
    "sales": [
        "What does pricing look like for a team of {n} people?",
        "We are interested in the enterprise plan, can someone walk us through it?",
        "Do you offer a discount for nonprofits or schools?",
        "I'd like to book a demo of the {plan} plan for my team at {company}.",
        "Is there volume pricing if we buy {n} seats?",
        "Can we get a quote for {n} licences for {company}?",
        "What is the difference between the {plan} and {plan2} plans?",
        "Do you offer annual contracts at a lower price than monthly billing?",
        "We are a startup with {n} employees, do you have a special offer for us?",
        "I would like to talk to someone about reselling your products in {city}.",
        "Can we trial the {plan} plan for a few weeks before we commit?",
        "Do you have a partner programme for agencies like {company}?",
        "Our procurement department needs a formal proposal for {n} users.",
        "Is there bulk pricing if we order {n} units of the {product}?",
        "Which plan would you recommend for a company of {n} people?",
    ],
}

# Optional extra sentences that hint at the same team without deciding it on their own.
TEAM_CONTEXT: dict[str, list[str]] = {
    "billing": [
        "My bank shows both payments as completed.",
        "I pay with a Visa card.",
        "I've attached a screenshot of my statement.",
    ],
    "technical": [
        "I already tried reinstalling the app.",
        "I'm on the latest version.",
        "Clearing the cache didn't help.",
        "It happens on both Wi-Fi and mobile data.",
    ],
    "account": [
        "I still have access to my old phone number.",
        "I've tried three different browsers.",
        "I can answer my security questions if needed.",
    ],
    "shipping": [
        "I'm at home most days to receive deliveries.",
        "The tracking page just says in transit.",
        "The box had a big dent in one corner.",
    ],
    "sales": [
        "We're currently comparing a few vendors.",
        "Our budget is set for next quarter.",
        "A colleague recommended your product.",
    ],
}
GENERIC_CONTEXT = [
    "I've been a customer for {years} years.",
    "This is the second time this has happened.",
    "I checked the help centre but couldn't find an answer.",
    "My account is under {email}.",
    "I'm writing on behalf of {company}.",
    "I can provide more details if needed.",
]
URGENT_CUES = [
    "This is urgent.",
    "Please help ASAP.",
    "I need this fixed today.",
    "Our whole team is blocked.",
    "I need a response right now.",
    "Please treat this as urgent, we have a deadline today.",
    "This needs to be resolved ASAP.",
    "Urgent please, our whole team is blocked until this is sorted.",
    "We can't work right now because of this.",
    "Please sort this out today, it's urgent.",
]
URGENT_PREFIXES = ["URGENT: ", "Urgent - ", "ASAP please: "]
LOW_CUES = [
    "No rush.",
    "No rush at all, whenever you have time.",
    "Whenever you get a chance.",
    "Just curious.",
    "Please look into it when you get a chance.",
    "It can wait, no rush.",
    "Low priority, just wanted to flag it.",
    "No hurry on this one.",
    "Not time sensitive, just curious.",
    "Whenever it's convenient for you.",
]
LOW_PREFIXES = ["No rush, but ", "Just curious: ", "When you get a chance, "]
CUES = {"urgent": (URGENT_CUES, URGENT_PREFIXES), "low": (LOW_CUES, LOW_PREFIXES)}
# Words that only urgent tickets may contain.
URGENT_MARKERS = ("urgent", "asap", "right now", "blocked", "today")
GREETINGS = [
    "Hi,",
    "Hi!",
    "Hello.",
    "Hello,",
    "Hello team,",
    "Hi there,",
    "Hey,",
    "Good morning,",
    "Good afternoon,",
    "Dear support,",
    "To whom it may concern,",
]
SIGN_OFFS = ["Thanks, {name}", "Best, {name}", "Regards, {name}", "Cheers, {name}", "- {name}"]
SIGN_OFFS += ["Thank you!", "Thanks in advance.", "Many thanks."]

NAMES = [
    "Alex",
    "Sam",
    "Jordan",
    "Priya",
    "Tom",
    "Maria",
    "Chen",
    "Fatima",
    "Lukas",
    "Aisha",
    "Diego",
    "Hannah",
    "Omar",
    "Ingrid",
    "Kenji",
    "Zoe",
    "Ravi",
    "Clara",
    "Noah",
    "Leila",
    "Mateo",
    "Sofia",
    "Ben",
    "Yuki",
    "Ahmed",
    "Grace",
    "Pavel",
    "Nina",
    "Oliver",
    "Amara",
]
PRODUCTS = [
    "Lumen desk lamp",
    "Tern backpack",
    "Halo speaker",
    "Corvid keyboard",
    "Marlow kettle",
    "Juniper coffee grinder",
    "Vela smartwatch",
    "Orbit webcam",
    "Quill stylus",
    "Summit water bottle",
    "Cascade blender",
    "Fable e-reader",
]
APPS = [
    "mobile app",
    "desktop app",
    "web dashboard",
    "iPad app",
    "Android app",
    "browser extension",
]
DEVICES = ["iPhone", "Pixel phone", "Windows laptop", "MacBook", "Samsung tablet", "Chromebook"]
ERRORS = [
    "Error 500",
    "a session expired message",
    "error code E-42",
    "a Something went wrong message",
    "a blank white screen",
    "an Unable to connect message",
    "error 403",
]
PLANS = ["Basic", "Plus", "Pro", "Team", "Business"]
CARRIERS = ["DHL", "UPS", "FedEx", "the courier", "the postal service", "Royal Mail"]
CITIES = ["Leeds", "Lyon", "Austin", "Toronto", "Madrid", "Melbourne", "Dublin", "Osaka", "Porto"]
COMPANIES = ["Brightline Studio", "Harbor Labs", "Northwind Foods", "Kestrel Design", "Alder & Co"]
DATES = [
    "last Tuesday",
    "yesterday",
    "two days ago",
    "last week",
    "over the weekend",
    "on March 3",
    "on the 14th",
    "at the start of the month",
    "on Friday",
]


def _details(rng: random.Random) -> dict[str, str]:
    """Random values for every placeholder a ticket template may use."""
    plan, plan2 = rng.sample(PLANS, 2)
    name = rng.choice(NAMES)
    order_fmt = rng.choice(["order #{}", "order {}", "order number {}", "my order #{}"])
    return {
        "order": order_fmt.format(rng.randint(10000, 999999)),
        "product": rng.choice(PRODUCTS),
        "amount": rng.choice(["${}", "{} EUR", "GBP {}"]).format(
            f"{rng.randint(5, 480)}.{rng.choice(['00', '49', '99'])}"
        ),
        "date": rng.choice(DATES),
        "plan": plan,
        "plan2": plan2,
        "app": rng.choice(APPS),
        "device": rng.choice(DEVICES),
        "error": rng.choice(ERRORS),
        "size": str(rng.choice([10, 25, 50, 100, 250])),
        "email": f"{name.lower()}.{rng.choice(['work', 'home', 'mail'])}{rng.randint(1, 99)}"
        "@example.com",
        "city": rng.choice(CITIES),
        "carrier": rng.choice(CARRIERS),
        "n": str(rng.choice([5, 8, 12, 20, 25, 40, 50, 75, 100, 150, 250])),
        "company": rng.choice(COMPANIES),
        "days": str(rng.randint(3, 12)),
        "years": str(rng.randint(2, 9)),
        "name": name,
    }


def _lower_first(text: str) -> str:
    """Lower-case the first letter unless the sentence starts with "I" or a proper name."""
    keep = ("I ", "I'", "FedEx", "Royal Mail")
    if text.startswith(keep) or not text[1:2].islower():
        return text
    return text[:1].lower() + text[1:]


def make_ticket(rng: random.Random, team: str, priority: str) -> str:
    """Compose one ticket text (1-4 sentences plus optional greeting and sign-off).

    Args:
        rng: Random source.
        team: Team whose issues the ticket describes.
        priority: ``low``, ``normal`` or ``urgent``; decides which cue, if any, is included.

    Returns:
        The ticket text.
    """
    d = _details(rng)
    issue = rng.choice(ISSUES[team]).format(**d)
    issue = issue[:1].upper() + issue[1:]
    body = [issue]
    r = rng.random()
    if r < 0.5:
        pool = TEAM_CONTEXT[team] if rng.random() < 0.6 else GENERIC_CONTEXT
        body.insert(rng.randint(0, 1), rng.choice(pool).format(**d))
    if r < 0.2:  # a second, different context sentence
        extra = rng.choice(GENERIC_CONTEXT + TEAM_CONTEXT[team]).format(**d)
        if extra not in body:
            body.append(extra)
    if priority != "normal":
        cues, prefixes = CUES[priority]
        r = rng.random()
        if r < 0.2:
            body[0] = rng.choice(prefixes) + _lower_first(body[0])
        elif r < 0.4:
            body.insert(0, rng.choice(cues))
        else:
            body.append(rng.choice(cues))
    text = " ".join(body)
    parts = []
    if rng.random() < 0.6:
        greeting = rng.choice(GREETINGS)
        parts.append(greeting)
        if greeting.endswith(","):
            text = _lower_first(text)
    parts.append(text)
    if rng.random() < 0.5:
        parts.append(rng.choice(SIGN_OFFS).format(**d))
    return " ".join(parts)


def _priority_ok(text: str, priority: str) -> bool:
    lowered = text.lower()
    has_urgent = any(m in lowered for m in URGENT_MARKERS)
    return has_urgent if priority == "urgent" else not has_urgent


def build_records(seed: int = SEED, n: int = N_RECORDS) -> list[dict[str, list[dict[str, str]]]]:
    """Build ``n`` unique, class-balanced chat records deterministically.

    Args:
        seed: Seed for the private random generator.
        n: Number of records.

    Returns:
        Records of the form ``{"messages": [system, user, assistant]}`` in shuffled order.
    """
    rng = random.Random(seed)
    seen: set[str] = set()
    records = []
    for i in range(n):
        team, priority = TEAMS[i % len(TEAMS)], PRIORITIES[(i // len(TEAMS)) % len(PRIORITIES)]
        while True:
            text = make_ticket(rng, team, priority)
            if text not in seen and 15 <= len(text.split()) <= 60 and _priority_ok(text, priority):
                break
        seen.add(text)
        answer = json.dumps({"team": team, "priority": priority})
        messages = [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": text},
            {"role": "assistant", "content": answer},
        ]
        records.append({"messages": messages})
    rng.shuffle(records)
    return records


def main(out_path: str | Path | None = None) -> int:
    """Write the dataset as JSON Lines and return the number of records.

    Args:
        out_path: Destination file; defaults to ``examples/data/support_tickets.jsonl``.

    Returns:
        The number of records written.
    """
    path = Path(out_path) if out_path is not None else DEFAULT_OUT
    path.parent.mkdir(parents=True, exist_ok=True)
    records = build_records()
    with path.open("w", encoding="utf-8", newline="\n") as fh:
        for record in records:
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")
    print(f"wrote {len(records)} records to {path}")
    return len(records)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else None)
