"""Word lists and facts for the ten topics of the generated pre-training corpus."""

# Each topic: name | nouns | verbs (base:past) | adjectives | places | people | facts.
# Word lists are space-separated ("_" joins multi-word entries); phrase lists use ";".
TOPIC_TEXT = (
    """the weather | umbrella raincoat cloud storm forecast breeze thermometer puddle rainbow
snowflake hailstone heatwave thunderstorm sunrise sunset weather_map raindrop icicle windmill
weather_station scarf jacket snowman barometer lightning_rod | watch:watched check:checked
predict:predicted measure:measured record:recorded notice:noticed photograph:photographed
forget:forgot carry:carried dry:dried shake:shook fold:folded open:opened describe:described
track:tracked hang:hung | stormy cloudy sunny windy foggy humid chilly freezing misty damp gloomy
mild breezy frosty drizzly overcast soaked | on the hill; by the harbour; near the coast; over the
valley; on the balcony; outside the station; along the river; at the weather station | the
forecaster; the meteorologist; the farmer; the pilot; the sailor | Warm air rises and cools, and
that is how most clouds form.; A light breeze from the sea often keeps coastal towns cooler in
summer.; Weather forecasts are far less reliable more than a week ahead.; Thunder is simply the
sound of lightning heating the air very quickly.; After a long dry spell, the first rain makes the
streets smell earthy.; Fog tends to settle in low valleys on calm, clear nights.; Snow muffles
sound, so a snowy street feels unusually quiet.; Hurricanes lose strength once they move over land
and away from warm oceans.; Frost forms when moisture in the air freezes directly onto cold
surfaces such as grass and car windows.""",
    """cooking | onion carrot potato tomato lemon garlic_clove pan pot oven knife spoon recipe
loaf cake pie sandwich omelette salad sauce dumpling cutting_board kettle bowl apron cookbook
frying_pan casserole pancake muffin | chop:chopped slice:sliced stir:stirred bake:baked
boil:boiled fry:fried taste:tasted season:seasoned peel:peeled grate:grated mix:mixed
roast:roasted serve:served wash:washed heat:heated prepare:prepared burn:burned whisk:whisked |
crispy spicy sweet sour salty bitter tender juicy savoury creamy crunchy golden delicious bland
fragrant sticky | in the kitchen; at the market stall; on the stove; at the bakery; in the
restaurant; at the dinner table; in the pantry | the chef; the baker; the cook; the waiter; the
head chef | A sharp knife is safer than a blunt one because it needs less force.; Salt brings out
the flavour of almost everything, even sweet dishes.; Bread dough needs time to rise in a warm
place before it goes into the oven.; A little lemon juice at the end can brighten a heavy stew.;
Onions turn sweet and golden when they are cooked slowly.; Good soup usually starts with a simple
stock and plenty of patience.; Resting meat for a few minutes after cooking keeps it juicy.;
Fresh herbs such as basil and parsley lose their flavour if they are cooked for too long.""",
    """travel | suitcase passport ticket train bus ferry airport hotel map backpack guidebook
boarding_pass platform taxi hostel souvenir postcard timetable compass tent camera cabin carriage
sleeping_bag visa | pack:packed book:booked board:boarded miss:missed catch:caught visit:visited
explore:explored lose:lost find:found reserve:reserved cancel:cancelled unpack:unpacked
rent:rented follow:followed | crowded scenic remote exotic delayed comfortable cramped historic
charming sleepy bustling foreign distant overnight peaceful | at the airport; on the platform; in
the old town; near the border; at the harbour; in a small village; on the night train; at the
hotel desk | the tour guide; the conductor; the driver; the receptionist; the traveller |
Travelling light makes it much easier to change plans at the last minute.; Trains often arrive in
the middle of a city, while airports are usually far outside.; It is wise to keep a copy of your
passport somewhere separate from the original.; Local markets are a good place to learn how people
in a town really live.; Many travellers say the best moments of a trip are the ones they did not
plan.; Booking early is usually cheaper, but it leaves less room for surprises.; Jet lag is
usually worse when flying east, because the day becomes shorter.""",
    """gardening | seed shovel rake hose flowerpot tulip rose sunflower hedge lawn shed
compost_heap greenhouse watering_can seedling vine bush weed root blossom wheelbarrow beetle worm
fence trellis | plant:planted water:watered prune:pruned dig:dug weed:weeded trim:trimmed
harvest:harvested sow:sowed fertilise:fertilised mow:mowed repot:repotted protect:protected
cover:covered pick:picked move:moved | leafy thorny blooming wilted green muddy overgrown tidy
fertile sandy sheltered shady flowering hardy delicate | in the back garden; behind the shed;
along the fence; in the greenhouse; on the allotment; by the pond; under the apple tree | the
gardener; the florist; the landscaper; the beekeeper | Most vegetables need at least six hours of
sunlight a day.; Watering in the early morning means less water is lost to the afternoon heat.; A
thick layer of mulch keeps the soil moist and keeps weeds down.; Worms are a good sign, because
they mean the soil is healthy.; Some plants grow better together, such as beans and sweetcorn.;
Pruning in late winter helps many shrubs flower more in spring.; Bees visit flowers for nectar
and carry pollen from one blossom to the next.""",
    """computers and software | laptop keyboard screen mouse printer router password file folder
backup program browser update server database spreadsheet charger cable hard_drive app bug script
terminal website tablet | install:installed restart:restarted update:updated save:saved
delete:deleted download:downloaded upload:uploaded debug:debugged configure:configured
test:tested type:typed back_up:backed_up reset:reset compile:compiled search:searched
rename:renamed share:shared | slow fast frozen wireless digital outdated secure encrypted portable
reliable buggy responsive compatible offline | at the office; in the server room; on the desk; at
the help desk; in the computer lab; in the library | the developer; the engineer; the technician;
the programmer; the administrator | Restarting a computer clears temporary problems more often
than people expect.; A good backup is one that you have actually tried to restore.; Long
passwords made of several unrelated words are hard to guess but easy to remember.; Software
updates often fix security holes as well as small bugs.; Programs read data from memory much
faster than from a disk.; Writing a short test before changing code helps catch mistakes early.;
Most error messages make more sense if you read them slowly, line by line.""",
    """shopping and deliveries | parcel package receipt basket trolley shelf coupon price_tag
delivery doorbell warehouse order box label catalogue bargain checkout queue voucher gift shoebox
shopping_bag | order:ordered deliver:delivered return:returned compare:compared wrap:wrapped
pay_for:paid_for exchange:exchanged choose:chose sign_for:signed_for collect:collected
browse:browsed scan:scanned weigh:weighed | cheap pricey discounted damaged late secondhand
brand-new bulky fragile lightweight affordable handmade imported | at the supermarket; at the
corner shop; at the front door; at the post office; in the shopping centre; at the market; on the
doorstep | the courier; the cashier; the shopkeeper; the delivery driver; the customer | Keeping
receipts makes returning a faulty item much simpler.; Many shops offer free delivery above a
certain order value.; Comparing prices online can save a surprising amount of money.; Parcels are
often left with a neighbour when nobody is at home.; Buying in bulk is cheaper only if you
actually use everything you buy.; A tracking number shows where a parcel is at each stage of its
journey.""",
    """banking and payments | bank_account credit_card debit_card loan mortgage statement payment
transfer salary budget savings_account cash_machine cheque invoice bill pension deposit balance
interest_rate wallet coin banknote fee subscription | pay:paid transfer:transferred
withdraw:withdrew deposit:deposited borrow:borrowed lend:lent spend:spent owe:owed earn:earned
invest:invested refund:refunded charge:charged approve:approved calculate:calculated | monthly
annual overdue fixed variable generous modest unexpected financial hidden automatic contactless |
at the bank; at the cash machine; in the branch; at the counter; in the banking app; at the
accountant's office | the bank clerk; the accountant; the branch manager; the lender; the auditor
| A simple budget starts with writing down everything you spend for a month.; Paying a credit
card bill in full each month avoids interest charges.; Banks will never ask for your full
password by email or phone.; Small regular savings grow faster than most people expect.; An
emergency fund can cover surprises such as a broken boiler or a sudden trip.; Direct debits make
it easy to pay bills on time, but they are easy to forget about.; Inflation means that the same
amount of money buys a little less every year.""",
    """sports | football ball racket goal stadium match tournament trophy whistle helmet bicycle
marathon net jersey medal scoreboard bat glove swimming_pool running_track pitch court skateboard
| kick:kicked throw:threw score:scored win:won train:trained run:ran jump:jumped swim:swam
cheer_for:cheered_for coach:coached defend:defended pass:passed hit:hit practise:practised
stretch:stretched | athletic competitive exhausting fit energetic fierce fair thrilling
professional amateur sporty determined | on the pitch; at the stadium; in the gym; on the running
track; at the swimming pool; on the tennis court; in the changing room | the coach; the referee;
the goalkeeper; the captain; the runner; the fans | Stretching after exercise helps muscles
recover.; A good team often wins because players trust each other, not because of one star.;
Drinking enough water matters as much as training hard.; Most marathon runners slow down in the
final few miles.; Referees have to make quick decisions with very little time to think.; Regular
gentle exercise suits most people better than rare bursts of hard training.; Cyclists ride close
behind each other because the rider in front blocks most of the wind.""",
    """science | microscope telescope experiment hypothesis laboratory sample molecule atom planet
comet magnet battery crystal fossil equation theory measurement beaker chart notebook dinosaur
volcano cell gene satellite | observe:observed discover:discovered analyse:analysed
explain:explained publish:published examine:examined freeze:froze dissolve:dissolved
repeat:repeated question:questioned weigh:weighed sketch:sketched label:labelled | chemical
electric magnetic microscopic invisible radioactive accurate scientific precise solid liquid
fascinating | in the laboratory; at the observatory; in the field; at the museum; in the
classroom; at the research station | the scientist; the professor; the student; the researcher;
the astronomer | Water expands when it freezes, which is why ice floats.; Light from the Sun takes
about eight minutes to reach the Earth.; A good experiment changes only one thing at a time.;
Plants turn sunlight, water and air into sugar and oxygen.; Sound travels faster through water
than through air.; Scientists repeat experiments to make sure a result was not just luck.;
Fossils form when the remains of living things are slowly replaced by minerals.; The Moon has no
weather, so footprints left there can last for millions of years.""",
    """city life | bus_stop subway tram apartment street traffic_light bridge cafe library museum
crosswalk skyscraper bicycle_lane pavement square fountain billboard elevator rooftop alley
parking_space theatre neighbourhood | walk_past:walked_past cross:crossed wait_for:waited_for
cycle_to:cycled_to paint:painted repair:repaired build:built avoid:avoided clean:cleaned
close:closed sweep:swept decorate:decorated | busy noisy lively vibrant polluted spacious cosy
urban trendy tall shabby graffiti-covered | downtown; in the city centre; near the station; on
the corner; across the road; in the underground; on the high street | the bus driver; the police
officer; the street musician; the shop owner; the mayor; the cleaner | Big cities often feel
lonely even though they are full of people.; Cycling is usually the fastest way to cross a
crowded city centre.; Parks give city residents somewhere quiet to rest and breathe.; Rents tend
to be highest near good transport links.; Most cities look completely different at five in the
morning.; Street markets bring life to neighbourhoods that are otherwise quiet.; Trees along a
street can make it noticeably cooler on a summer afternoon.""",
)
