"""Procedurally generated English text for offline pre-training.

tuneforge's examples and tests run without internet access or a model hub, so the project builds
its own tiny Llama model and BPE tokenizer and briefly pre-trains them on text produced here. The
goal is not literary quality but a "base" model that has seen plenty of real-looking English and
generic chat turns before it is fine-tuned on a task.

* :func:`general_corpus` - prose paragraphs from a small template grammar over ten everyday
  topics (weather, cooking, travel, gardening, computers, shopping, banking, sports, science and
  city life).
* :func:`assistant_dialogues` - short chat conversations in OpenAI message form in which the
  assistant always replies in polite English prose (never JSON), including customer-support
  requests, so that fine-tuning has a clear behaviour change to teach.

Both are pure Python and use only a private :class:`random.Random`, so a given seed yields
byte-identical output on any machine running Python 3.11 or newer.
"""

from __future__ import annotations

import json
import random

from tuneforge.models.corpus_topics import TOPIC_TEXT

__all__ = ["assistant_dialogues", "general_corpus", "structured_text"]


def _norm(text: str) -> str:
    return " ".join(text.split())


def _words(text: str) -> list[str]:
    """Split a space-separated word list; underscores stand for spaces inside an entry."""
    return [w.replace("_", " ") for w in text.split()]


def _phrases(text: str, sep: str = ";") -> list[str]:
    """Split a phrase list on ``sep``, normalising whitespace."""
    return [_norm(p) for p in text.split(sep) if p.strip()]


def _topic(text: str) -> dict[str, list[str]]:
    name, nouns, verbs, adjs, places, people, facts = _norm(text).split(" | ")
    pairs = [v.split(":") for v in _words(verbs)]
    return {
        "name": [name],
        "nouns": _words(nouns),
        "adjs": _words(adjs),
        "base": [p[0] for p in pairs],
        "past": [p[1] for p in pairs],
        "places": _phrases(places),
        "people": _phrases(people),
        "facts": _phrases(facts),
    }


_TOPICS = tuple(_topic(t) for t in TOPIC_TEXT)

_MALE = _words("""James Tom Daniel Omar Lucas Ravi Hugo Leo Samuel Kenji Pablo Felix Arthur Ben
Marco Ivan Jonas Theo Carlos Amir Noah Oscar Victor Elliot Dmitri Henry Tariq Malik Stefan Diego
Patrick Rupert Kofi Andre Luis""")
_FEMALE = _words("""Anna Maria Sofia Priya Emma Chloe Grace Lina Yuki Fatima Isabel Nora Clara
Hannah Ruth Zoe Mei Olivia Alice Leila Elena Martha Ingrid Amara Julia Rosa Aisha Beatrice Freya
Naomi Greta Lucia Sienna Keiko Harriet""")
_FAMILY = [(p, "she") for p in _phrases("my sister; my aunt; my grandmother; my mother; my boss")]
_FAMILY += [(p, "he") for p in _phrases("my brother; my uncle; my grandfather; my father")]
_THEY = "my cousin; my friend; our neighbour; my colleague; the children; my flatmate"
_FAMILY += [(p, "they") for p in _phrases(_THEY)]
_TIMES = _phrases("""in the morning; early in the morning; late at night; on Monday; on a quiet
Tuesday; last weekend; the next day; after lunch; before breakfast; during the holidays; in early
spring; at the end of the month; a few days ago; yesterday afternoon; one rainy evening; last
summer; every Saturday; around noon; just before midnight; in the middle of the week; after work;
over the weekend; on Friday evening; in late autumn; during the winter; this morning; on
Thursday; at dawn; on a hot afternoon in July; shortly after sunrise; on New Year's Day; during a
long February; twice last month""")
_ADVERBS = _words("""carefully slowly quickly quietly gladly patiently proudly nervously suddenly
finally eagerly calmly happily gently loudly neatly politely briefly boldly cheerfully silently
reluctantly hastily thoughtfully""")
_ADJS = _words("""small large old new bright dark heavy light cheap expensive simple strange useful
quiet clean dirty warm cold fresh empty full narrow wide soft hard smooth rough tiny huge lovely
ugly modern ancient friendly tired lucky famous local ordinary unusual perfect broken shiny dusty
pleasant awful enormous elegant fragile colourful plain rusty sturdy""")
_FEEL = _words("""happy proud relieved nervous excited annoyed puzzled grateful disappointed curious
anxious delighted embarrassed confident surprised hopeful bored frustrated amused thankful worried
satisfied""")
_REASONS = _phrases("""because it had taken so long; even though nobody else noticed; because the
week had been difficult; although it cost more than expected; because it brought back old
memories; since the weather was finally improving; because everything had gone to plan; even
though the deadline was close; because a friend had recommended it; since nobody had explained the
rules; because it was the first attempt; although the instructions were confusing""")
_ACTIVITIES = _phrases("""reading a long novel; calling an old friend; walking the dog; writing a
letter to a cousin; finishing the crossword; feeding the cat; ironing a shirt; tidying the attic;
listening to the radio; watching a documentary; sorting the laundry; practising the piano;
answering emails; knitting a scarf; painting the hallway; fixing a squeaky door; playing chess;
baking biscuits; taking a short nap; mending a torn sleeve; humming an old song; polishing boots;
vacuuming the stairs; emptying the dishwasher; renewing a library card; booking a dentist
appointment; hanging new curtains; building a birdhouse; solving a jigsaw puzzle; learning a few
words of Spanish; repairing a wobbly chair; recycling old newspapers; meditating for ten minutes;
ordering a pizza; queuing for the pharmacy; chatting with the postman""")
_EVAL = _words("easy hard wise sensible tricky pleasant important useful smart risky worthwhile")
_CONNECT = _phrases("""However; Meanwhile; After that; In the end; Still; Later; Of course; Luckily;
Sadly; At first; Then; Even so; By evening; To be honest; As a result; In fact; Surprisingly;
Fortunately; Unfortunately; Soon; Besides; Eventually""")
_NUMBERS = _phrases("two; three; four; five; six; several; a dozen; a few; many; twenty")
_QUANT = _phrases("most; some; all; half; a few; each")
_CLOSERS = _phrases("""Everyone agreed that it had been worth the effort.; Nobody expected it to go
so well.; It turned out better than anyone had planned.; It was not perfect, but it was good
enough.; Looking back, it was one of the better days of the year.; Some things are simpler than
they first appear.; It was a small thing, but it made a real difference.; That was the end of it,
at least for a while.; Next time, they would plan a little more carefully.""")


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _prefixed(prefix: str, text: str) -> str:
    """Join a lead-in to a sentence, lower-casing the sentence after a comma."""
    if prefix.endswith(", ") and not text.startswith(("I ", "I'")):
        text = text[:1].lower() + text[1:]
    return prefix + text


def _an(phrase: str) -> str:
    return ("an " if phrase[:1] in "aeiou" else "a ") + phrase


_IRREGULAR = {
    k: v
    for k, v in (
        p.split(":")
        for p in _words("""knife:knives loaf:loaves shelf:shelves scarf:scarves mouse:mice
potato:potatoes tomato:tomatoes volcano:volcanoes hypothesis:hypotheses snowman:snowmen""")
    )
}


def _plural(noun: str) -> str:
    if noun in _IRREGULAR:
        return _IRREGULAR[noun]
    if noun.endswith(("s", "x", "ch", "sh")):
        return noun + "es"
    if noun.endswith("y") and noun[-2:-1] not in "aeiou":
        return noun[:-1] + "ies"
    return noun + "s"


def _subject(rng: random.Random, topic: dict[str, list[str]]) -> tuple[str, str]:
    """Pick a sentence subject and the pronoun that refers back to it."""
    r = rng.random()
    if r < 0.25:
        return rng.choice(_MALE), "he"
    if r < 0.5:
        return rng.choice(_FEMALE), "she"
    if r < 0.68:
        return rng.choice(_FAMILY)
    if r < 0.88:
        return rng.choice(topic["people"]), "they"
    return rng.choice([("I", "I"), ("we", "we")])


def _sentence(rng: random.Random, t: dict[str, list[str]], shape: int) -> str:
    """Render one sentence of the given shape (an index into the template set) for topic ``t``."""
    c = rng.choice
    subj, pron = _subject(rng, t)
    subj2, _ = _subject(rng, t)
    n1, n2 = c(t["nouns"]), c(t["nouns"])
    a1, a2 = c(t["adjs"] + _ADJS), c(t["adjs"])
    vi = rng.randrange(len(t["base"]))
    base, past, past2 = t["base"][vi], t["past"][vi], c(t["past"])
    place, time, adv, name = c(t["places"]), c(_TIMES), c(_ADVERBS), c(_MALE + _FEMALE)
    pair = f"{name} and I" if subj in ("I", "we") else f"{subj} and {name}"
    templates = [
        f"{time}, {subj} {past} the {a1} {n1} {place}.",
        f"{subj} {past} the {n1} {adv} {time}.",
        f"when {subj} {past} the {n1}, {subj2} {past2} {_an(a2 + ' ' + n2)} {place}.",
        f"{subj} {past} the {n1} because the {n2} was too {a2}.",
        f"the {n1} {place} was {a1}, but the {n2} was {a2}.",
        f"{c(_CONNECT)}, {subj} {past} the {n1} {time}.",
        f"{subj} said that the {n1} looked {a2} {time}.",
        f"it is usually {c(_EVAL)} to {base} the {n1} {place}.",
        f"{subj} wanted to {base} the {n1}, so {pron} {past2} the {n2} instead.",
        c(
            [
                f"why did {subj} {base} the {n1} {time}?",
                f"have you seen the {a1} {n1} {place}?",
                f"do you think the {n1} is too {a2}?",
                f"what would you do with {_an(a1 + ' ' + n1)}?",
                f"where did {subj} leave the {n1}?",
                f"who {past} the {n1} {place}?",
                f"is it true that {subj} {past} the {n1} {adv}?",
            ]
        ),
        c(t["facts"]),
        f"there were {c(_NUMBERS)} {_plural(n1)} {place}, and {subj} {past} {c(_QUANT)} of them.",
        f"{pair} {past} the {n1} together {time}.",
        f"although the {n1} was {a2}, {subj} {past} it {adv}.",
        f"{subj} {past} the {n1}, and then {pron} {past2} the {n2}.",
        c(
            [
                f'"What {_an(a1 + " " + n1)}!" said {name}.',
                f'"I think the {n1} is {a2}," said {name}.',
                f'"Could you {base} the {n1} for me?" {name} asked.',
            ]
        ),
        f"{subj} felt {c(_FEEL)} about the {n1}, {c(_REASONS)}.",
        f"after {c(_ACTIVITIES)}, {subj} {past} the {n1} {place}.",
        c(_CLOSERS),
    ]
    return _cap(templates[shape])


# Relative weights of the templates above; facts and closers are rarer so they repeat less.
_WEIGHTS = [8, 8, 7, 7, 6, 6, 5, 5, 6, 7, 4, 5, 5, 5, 6, 4, 5, 5, 2]
_SHAPES = list(range(len(_WEIGHTS)))


def general_corpus(seed: int = 0, n_paragraphs: int = 4000) -> list[str]:
    """Deterministic English prose paragraphs (3-6 sentences each) on varied everyday topics.

    Args:
        seed: Seed for the private ``random.Random`` instance.
        n_paragraphs: Number of paragraphs to generate.

    Returns:
        ``n_paragraphs`` strings, each 3-6 sentences about one topic. The same seed always gives
        the same list.
    """
    rng = random.Random(seed)
    out: list[str] = []
    for _ in range(n_paragraphs):
        topic = rng.choice(_TOPICS)
        sentences = [_sentence(rng, topic, rng.choice([0, 0, 1, 10, 14]))]
        for _ in range(rng.randint(2, 5)):
            sentences.append(_sentence(rng, topic, rng.choices(_SHAPES, _WEIGHTS)[0]))
        out.append(" ".join(sentences))
    return out


# ---------------------------------------------------------------------------------------------
# Dialogues
# ---------------------------------------------------------------------------------------------

_SYSTEM = _phrases("""You are a helpful assistant.; You are a friendly and concise assistant.; You
are a helpful assistant. Answer clearly and politely.; You are a customer support assistant. Be
kind and helpful.; You are a knowledgeable assistant who explains things simply.; You are a
patient, polite assistant.""")
_Q_PREFIX = ["", "", "", "Hi! ", "Hello. ", "Hey there. ", "Quick question. ", "Good morning! "]
_A_PREFIX = ["", "", "Good question! ", "Sure. ", "Of course! ", "Happy to help. "]
_A_CLOSE = _phrases("""Let me know if you would like more detail.; I hope that helps!; Feel free to
ask if anything is unclear.; Is there anything else I can help you with?""")
_TOPIC_Q = _phrases("""Can you tell me something interesting about {t}?; Do you have a quick tip
about {t}?; What is one thing everyone should know about {t}?; I'm curious about {t}. Can you
share a fact?; Tell me a fun fact about {t}, please.""")
_SENTENCE_Q = _phrases("""Can you write a short sentence about {n}?; Please give me an example
sentence that uses the word "{w}".; Write one sentence that mentions {n}, please.""")
# Everyday questions and plain-prose answers: "question | answer", separated by ";".
_QA = [
    tuple(p.split(" | "))
    for p in _phrases("""
How long should I boil an egg? | For a soft yolk, about six minutes is usually enough, and around
ten minutes gives a firm egg.; How can I sleep better? | Try to go to bed at the same time each
night and keep screens out of the bedroom for the last hour. A cool, dark room also helps most
people.; What is a good way to start learning a language? | Practise for a few minutes every day
rather than for hours once a week. Listening to simple conversations and repeating them aloud
builds confidence quickly.; How do I keep my houseplants alive? | Most houseplants die from too
much water, so let the soil dry out a little between waterings. Bright, indirect light suits nearly
all of them.; What should I pack for a weekend trip? | Pack a change of clothes for each day, a
warm layer, your charger and any medicine you need.; How do I make my password more secure? | Use a
long password made of several unrelated words and never reuse it on other sites. A password manager
can remember them for you.; Why is the sky blue? | Sunlight is scattered by the air, and blue light
is scattered much more than red light, so the sky looks blue from the ground.; How can I save money
on groceries? | Plan your meals for the week and shop with a list, so you only buy what you need.
Cheaper store brands are often just as good.; What is a healthy breakfast? | Something with protein
and fibre, such as eggs with wholegrain toast or porridge with fruit, keeps most people full until
lunch.; How often should I back up my files? | Back up important files at least once a week, or
daily if you change them every day. Keeping one copy in a different place protects you from theft
or fire.; How do I write a polite email to my manager? | Open with a short greeting, state your
request clearly in the first few lines and thank them for their time at the end.; What can I cook
with rice and vegetables? | A simple fried rice works well. Fry chopped vegetables, add cold cooked
rice and a splash of soy sauce, and finish with an egg if you have one.; How do I stay focused
while working from home? | Set up a dedicated place to work, take short breaks every hour and keep
your phone in another room during focused tasks.; What is the best way to start running? | Begin
with short intervals of running and walking three times a week, and slowly increase the running
time.; How do plants make food? | Plants use sunlight to turn water and carbon dioxide into sugar,
releasing oxygen as they do so. This process is called photosynthesis.; Can you suggest a name for
my cat? | How about Pepper, Miso or Biscuit? A short name with one or two syllables is easiest for
a cat to recognise.; How do I get a stain out of a shirt? | Rinse the stain with cold water as soon
as you can, then rub in a little washing liquid before putting the shirt in the wash.; What should
I do if my laptop is running slowly? | Restart it first, then close programs you are not using and
check that there is free space on the disk.; Is it better to rent or buy a home? | It depends on
how long you plan to stay and on local prices. Buying usually makes more sense if you expect to
stay for many years.; How do I prepare for a job interview? | Read about the company, prepare a few
short stories about your past work and think of two or three questions to ask them. Arriving a
little early also helps you stay calm.; What is the difference between weather and climate? |
Weather is what happens over hours or days, while climate describes the typical pattern over many
years.; How can I make my phone battery last longer? | Lower the screen brightness, close apps you
are not using and turn off location services when you do not need them.""")
]
# Support requests: "kind | user messages split by / | replies split by /". Kind "a" replies
# start with an apology, kind "q" (a question rather than a problem) with a friendly opener.
_SUPPORT = [
    [_phrases(f, "/") for f in p.split(" | ")]
    for p in _phrases("""
a | I was charged twice for order {o}. / My card shows two payments for the same subscription. /
Why did you take {m} from my account twice? | I'll look into the duplicate payment and make sure
the extra charge is refunded to you. / I'll check your billing history and arrange a refund for the
second payment.; a | I asked for a refund {d} and still haven't received it. / Where is my refund
for order {o}? | I'll check the status of your refund and let you know when it will reach your
account.; a | I can't log in to my account. / The app keeps saying my password is wrong, but I know
it's right. / I'm locked out of my account after too many attempts. | I'll help you get back into
your account, starting with a secure password reset. / I'll unlock your account and send you a link
to set a new password.; a | My parcel is late. It was supposed to arrive {d}. / Order {o} still
hasn't arrived. / The tracking for my package hasn't changed in days. | I'll contact the courier to
find out where your parcel is and update you as soon as I hear back. / I'll look up your order and
check what has happened to the delivery.; a | The item I received is damaged. / My {p} arrived
broken. | I'll arrange a replacement straight away, and you won't need to pay for return postage.;
a | The app crashes every time I open it. / The app keeps freezing on my phone. / I get an error
whenever I try to save my work. | Please try updating the app and restarting your phone, and I'll
pass the details to our technical team. / I'll report this to our engineers, and in the meantime
reinstalling the app often clears the problem.; q | How do I upgrade to the premium plan? / What do
I get if I upgrade my plan? / Can I switch to the annual plan? | You can upgrade at any time from
the billing page in your account settings, and the new features become available immediately. / I'd
be glad to walk you through the available plans so you can pick the one that suits you best.; q | I
want to cancel my subscription. / How do I stop my membership from renewing? | I can help you
cancel, and your access will continue until the end of the current billing period.; a | I got the
wrong item in my order. / I ordered a {p} but received something else. | I'll send the correct item
out to you and arrange a free collection for the wrong one.; a | My discount code isn't working. /
The voucher I was sent doesn't apply at checkout. | I'll check the code on my side and make sure
the discount is applied to your order.; q | How do I change the email address on my account? / I
need to update my delivery address. | You can change this in your account settings, and I'm happy
to update it for you if you prefer.; a | I never received the password reset email. / The
verification code never arrives. | Please check your spam folder first, and I'll send a fresh email
to your address right away.; q | Do you offer discounts for teams? / Can I get a demo before I buy?
| I'd be happy to help with that, and I can put you in touch with our sales team to find the best
option for you.""")
]
_OPENER = {
    "a": _phrases("""I'm sorry to hear about that.; I'm really sorry for the trouble.; Thank you for
letting us know, and I apologise for the inconvenience.; I'm sorry about this, that must be
frustrating.; Thanks for reaching out, and sorry for the hassle.; I apologise for the
inconvenience."""),
    "q": _phrases("""Thanks for getting in touch!; Good question.; Happy to help with that.; Thanks
for your message."""),
}
_SUPPORT_CLOSE = {
    "a": _phrases("""Is there anything else I can help you with?; I'll keep you updated.; Thank you
for your patience.; Please let me know if the problem continues."""),
    "q": _phrases("Is there anything else I can help with?; Let me know if you have questions."),
}
_THANKS = _phrases("Thank you!; Thanks, that helps.; Great, thanks a lot.; Perfect, thank you.")
_WELCOME = _phrases("""You're welcome! Have a great day.; Glad I could help!; You're very welcome.
Let me know if anything else comes up.; Happy to help, take care!""")
_PRODUCTS = _words("kettle lamp backpack speaker keyboard blender jacket phone_case")


def _exchange(rng: random.Random, follow_up: bool = False) -> tuple[str, str]:
    """Generate one user message and the assistant's 1-3 sentence prose reply."""
    c = rng.choice
    kind = rng.random()
    if kind < 0.4:
        opener, users, replies = c(_SUPPORT)
        user = c(users).format(
            o=f"#{rng.randint(10000, 99999)}",
            d=c(_TIMES),
            m=f"${rng.randint(5, 200)}",
            p=c(_PRODUCTS),
        )
        if not follow_up and rng.random() < 0.4:
            user = _prefixed(c(["Hi, ", "Hello, ", "Hi there. ", "Hello. "]), user)
        if opener[0] == "a" and rng.random() < 0.25:
            user += " " + c(
                _phrases("Can you help?; Please help.; What should I do?; This is really annoying.")
            )
        reply = [c(_OPENER[opener[0]]), c(replies)]
        if rng.random() < 0.5:
            reply.append(c(_SUPPORT_CLOSE[opener[0]]))
        return user, " ".join(reply)
    prefix = "" if follow_up else c(_Q_PREFIX)
    if kind < 0.6:
        topic = c(_TOPICS)
        user = prefix + c(_TOPIC_Q).format(t=topic["name"][0])
        reply = c(_A_PREFIX) + c(topic["facts"])
    elif kind < 0.85:
        question, answer = c(_QA)
        user, reply = prefix + question, c(_A_PREFIX) + answer
    else:
        topic = c(_TOPICS)
        noun, shape = c(topic["nouns"]), c([0, 1, 3, 14])
        user = c(_SENTENCE_Q).format(n=_an(noun), w=noun)
        text = _sentence(rng, topic, shape)
        while noun not in text:
            text = _sentence(rng, topic, shape)
        reply = c(["Here is one. ", "Sure. ", "Of course. ", ""]) + text
    if sum(reply.count(p) for p in ".!?") < 3 and rng.random() < 0.3:
        reply += " " + c(_A_CLOSE)
    return user, reply


def assistant_dialogues(seed: int = 0, n: int = 1500) -> list[list[dict[str, str]]]:
    """Deterministic generic chat conversations in OpenAI message form.

    Each conversation is an optional system message (about 30% of them), a user message and an
    assistant reply; about 20% continue with a second user/assistant exchange. Users ask everyday
    questions or write customer-support requests, and the assistant always answers with one to
    three sentences of polite prose, never JSON.

    Args:
        seed: Seed for the private ``random.Random`` instance.
        n: Number of conversations to generate.

    Returns:
        ``n`` conversations, each a list of ``{"role": ..., "content": ...}`` dicts.
    """
    rng = random.Random(seed)
    out: list[list[dict[str, str]]] = []
    for _ in range(n):
        msgs: list[dict[str, str]] = []
        if rng.random() < 0.3:
            msgs.append({"role": "system", "content": rng.choice(_SYSTEM)})
        user, reply = _exchange(rng)
        msgs += [{"role": "user", "content": user}, {"role": "assistant", "content": reply}]
        if rng.random() < 0.2:
            if rng.random() < 0.5:
                user, reply = rng.choice(_THANKS), rng.choice(_WELCOME)
            else:
                user, reply = _exchange(rng, follow_up=True)
                lead = rng.choice(["Thanks. ", "Thank you. ", "Also, ", "One more thing. "])
                user = _prefixed(lead, user)
            msgs += [{"role": "user", "content": user}, {"role": "assistant", "content": reply}]
        out.append(msgs)
    return out


# ---------------------------------------------------------------------------------------------
# Structured text
# ---------------------------------------------------------------------------------------------

# Real pre-training data holds code and data files besides prose; without them a model has
# never predicted a brace or a quoted key, and an adapter alone cannot teach the embeddings.
_KEYS = _words("""name city item price status colour day count category type level id date
country product size score owner title enabled tags email phone note total quantity unit
language version region""")
_STATUS = _words("active pending closed open done draft archived new ready paused")


def _value(rng: random.Random, key: str) -> object:
    topic = rng.choice(_TOPICS)
    if key in {"price", "total"}:
        return round(rng.uniform(1, 500), 2)
    if key in {"count", "quantity", "score", "level", "size", "id", "version"}:
        return rng.randint(0, 999)
    if key == "enabled":
        return rng.choice([True, False])
    if key == "status":
        return rng.choice(_STATUS)
    if key == "tags":
        return [rng.choice(_ADJS) for _ in range(rng.randint(1, 3))]
    if key in {"name", "owner"}:
        return rng.choice(_MALE + _FEMALE)
    if key == "colour":
        return rng.choice(_words("red green blue black white grey yellow orange purple brown"))
    return rng.choice(topic["nouns"]).replace("_", " ")


def structured_text(seed: int = 0, n: int = 800) -> list[str]:
    """Deterministic small JSON documents, key/value lists and records, as found in real corpora.

    Args:
        seed: Seed for the private ``random.Random`` instance.
        n: Number of documents.

    Returns:
        ``n`` strings: JSON objects (compact or indented), JSON arrays of records, or
        ``key: value`` lines.
    """
    rng = random.Random(seed)
    out: list[str] = []
    for _ in range(n):
        keys = rng.sample(_KEYS, rng.randint(2, 5))
        record = {key: _value(rng, key) for key in keys}
        form = rng.randrange(4)
        if form == 0:
            out.append(json.dumps(record))
        elif form == 1:
            out.append(json.dumps(record, indent=2))
        elif form == 2:
            rows = [record] + [{k: _value(rng, k) for k in keys} for _ in range(rng.randint(1, 3))]
            out.append(json.dumps(rows))
        else:
            out.append("\n".join(f"{k}: {v}" for k, v in record.items()))
    return out
