"""The words and bytes the demo crawl is made of; demo.py assembles them into pages and WARC files.

Kept apart from the assembly so that demo.py reads as structure: which page exercises which filter, and in what
order each file's pages draw from its random generator. Any edit here changes the demo's bytes, and with them the
counts that the crawl tests and the demo report expect.
"""

# ---- articles -------------------------------------------------------------------------------------------------

# Article prose is built from sentence templates whose slots come from a topic; each template is used at most once
# per article so that n-gram repetition stays at the level of real writing.
TEMPLATES = [
    "Most people who start with {topic} discover that the first few weeks are the hardest, and that patience matters "
    "more than {gear}.",
    "When {person} first tried {activity}, {pron} expected it to take an afternoon; it took most of a season.",
    "The trick, according to {expert}, is to focus on {thing} before worrying about anything else.",
    "In {place}, where the weather changes quickly, {activity} has become a popular way to spend a weekend.",
    "There is no single right answer here, but a few habits make a real difference.",
    "If you only remember one thing from this guide, let it be this: {thing} deserves your attention every week.",
    "A common mistake is to buy {gear} too early, before you know what you actually need.",
    "Over the years, {person} has kept a notebook of what worked and what did not.",
    "The results were surprising, even to people who had been doing this for decades.",
    "According to a survey published last {month}, nearly {pct} percent of beginners give up within a year.",
    "That number sounds discouraging, yet it mostly reflects unrealistic expectations rather than a lack of talent.",
    "It helps to set aside a regular time, even if it is only twenty minutes on a quiet evening.",
    "Some readers have asked whether {gear} is worth the money, and the honest answer is that it depends.",
    "For a small household, a modest budget of around {num} dollars is usually enough to get going.",
    "{expert} recommends starting with {thing}, because it teaches the basics without much risk.",
    "Local clubs in {place} meet once a month, and newcomers are almost always welcome.",
    "Nobody needs to be an expert to enjoy {topic}, and that is a large part of its appeal.",
    "The best advice we heard was also the simplest: keep notes, ask questions, and do not rush.",
    "During the first year, {person} made every mistake in the book and still enjoyed the process.",
    "Later, {pron} realised that most of those problems came from trying to do too much at once.",
    "Why does this matter so much? Because small improvements add up over many months.",
    "Experienced hands often disagree about the details, but they agree on the importance of {thing}.",
    "You will find that {thing} becomes second nature after a while, much like riding a bicycle.",
    "On a typical {day}, the work takes less than an hour and leaves plenty of time for everything else.",
    "Weather, cost and time are the three constraints that shape almost every decision in {topic}.",
    "A neighbour in {place} once told {person} that the secret was simply to show up every week.",
    "In the end, the people who stick with {topic} are rarely the most talented ones.",
    "They are the ones who treat setbacks as information instead of as failures.",
    "If something goes wrong, write down what happened and try a slightly different approach next time.",
    "The internet is full of conflicting advice, so it pays to test claims for yourself.",
    "We asked {expert} what {pron2} would tell a complete beginner, and the reply came without hesitation.",
    '"Start small, learn the names of things, and enjoy being bad at it for a while," {pron2} said.',
    "That attitude, more than any particular piece of equipment, is what separates a hobby from a chore.",
    "Many libraries in {place} now lend out {gear}, which is a cheap way to find out what suits you.",
    "It is worth remembering that {activity} was once considered an unusual pastime.",
    "Today it attracts students, retired teachers, nurses and software engineers alike.",
    "Costs have fallen steadily over the past decade, and good second-hand equipment is easy to find.",
    "The main risk is not money but time, because it is easy to lose whole weekends to {topic}.",
    "Keep a simple checklist by the door so that nothing important is forgotten.",
    "After a few months, {person} noticed that {thing} had improved more than anything else.",
    "Progress is rarely linear, and plateaus are a normal part of learning any practical skill.",
    "Some of the most rewarding moments come from sharing what you have learned with others.",
    "There will be days when nothing seems to work, and that is perfectly fine.",
    "By the second year, most of the early frustrations fade and the real enjoyment begins.",
    "Our own experience in {place} suggests that spring is the best season to begin.",
    "Finally, remember that {topic} is supposed to be fun, not another item on a long list of obligations.",
]

TOPICS = [
    dict(
        topic="vegetable gardening",
        activity="growing vegetables",
        gear="a raised bed kit",
        thing="soil health",
        title="What a Year of Vegetable Gardening Taught Me",
        heads=["Choosing a spot", "Soil comes first", "Watering without waste"],
    ),
    dict(
        topic="amateur astronomy",
        activity="stargazing",
        gear="an expensive telescope",
        thing="learning the night sky by eye",
        title="A Beginner's Guide to Amateur Astronomy",
        heads=["Dark skies", "Binoculars before telescopes", "Keeping an observing log"],
    ),
    dict(
        topic="home baking",
        activity="baking bread at home",
        gear="a stand mixer",
        thing="a reliable sourdough starter",
        title="Baking Bread at Home Without the Stress",
        heads=["Flour and water", "Timing the rise", "Common problems"],
    ),
    dict(
        topic="cycling to work",
        activity="commuting by bicycle",
        gear="a carbon road bike",
        thing="a safe and quiet route",
        title="How to Start Cycling to Work",
        heads=["Planning the route", "What to wear", "Staying safe in traffic"],
    ),
    dict(
        topic="bird watching",
        activity="watching birds",
        gear="a pair of premium binoculars",
        thing="recognising common songs",
        title="Bird Watching for Complete Beginners",
        heads=["Where to look", "Learning the songs", "Joining a local count"],
    ),
    dict(
        topic="woodworking",
        activity="building simple furniture",
        gear="a table saw",
        thing="sharpening hand tools",
        title="Simple Woodworking Projects for a Small Workshop",
        heads=["A small workshop", "Sharp tools matter", "Your first bookshelf"],
    ),
    dict(
        topic="personal budgeting",
        activity="tracking every expense",
        gear="a budgeting app",
        thing="an emergency fund",
        title="Personal Budgeting That Actually Works",
        heads=["Know where the money goes", "Building a cushion", "Reviewing each month"],
    ),
    dict(
        topic="trail running",
        activity="running on forest trails",
        gear="a pair of trail shoes",
        thing="an easy, conversational pace",
        title="Trail Running: Getting Off the Pavement",
        heads=["Easy miles first", "Shoes and kit", "Hills and recovery"],
    ),
]
PEOPLE = [
    ("Maria", "she"),
    ("Tom", "he"),
    ("Aisha", "she"),
    ("David", "he"),
    ("Lena", "she"),
    ("Sam", "he"),
    ("Priya", "she"),
    ("Jonas", "he"),
]
EXPERTS = [
    ("Dr. Helen Ward", "she"),
    ("coach Peter Lang", "he"),
    ("author Ruth Bell", "she"),
    ("club secretary Ian Moss", "he"),
]
PLACES = ["Leeds", "Portland", "Dunedin", "Halifax", "Bristol", "Tucson", "Galway", "Adelaide", "Duluth", "York"]
MONTHS = ["January", "March", "May", "August", "October", "November"]
DAYS = ["Saturday morning", "Sunday afternoon", "weekday evening", "rainy Tuesday"]
SITES = [
    "dailyhobbyist.com",
    "greenthumb.org",
    "thecommute.net",
    "slowliving.blog",
    "workbench-weekly.com",
    "northfieldnews.co.uk",
    "weekendguide.net",
    "thriftyhome.org",
]
AUTHORS = ["Clara Jensen", "Marcus Hill", "Nadia Okafor", "Oliver Grant", "Sofia Rossi", "Ben Carter"]

OTHER_LANGS = {
    "de": [
        "Der Gemeinderat hat am Dienstag beschlossen, die alte Stadtbibliothek bis zum nächsten Sommer zu "
        "renovieren.",
        "Viele Bürgerinnen und Bürger hatten sich seit Jahren über die engen Räume beschwert.",
        "Nach den Plänen des Architekten entsteht im Erdgeschoss ein heller Lesesaal mit großen Fenstern.",
        "Die Kosten werden auf rund zwei Millionen Euro geschätzt, wobei das Land einen Teil übernimmt.",
        "Während der Bauarbeiten bleibt eine kleine Ausleihstelle im Rathaus geöffnet.",
        "Der Bürgermeister betonte, dass die Bibliothek ein wichtiger Treffpunkt für alle Generationen sei.",
        "Kritiker bemängeln allerdings, dass der Zeitplan sehr knapp bemessen ist.",
        "Im Herbst sollen außerdem neue Kurse für Kinder und Senioren angeboten werden.",
        "Die Stadtverwaltung wird die Öffentlichkeit regelmäßig über den Fortschritt informieren.",
        "Wer Fragen zum Umbau hat, kann sich jeden Donnerstag im Bürgerbüro beraten lassen.",
    ],
    "fr": [
        "Le conseil municipal a décidé mardi de rénover la vieille bibliothèque avant l'été prochain.",
        "Depuis des années, de nombreux habitants se plaignaient du manque de place et de lumière.",
        "Selon les plans de l'architecte, une grande salle de lecture ouvrira au rez-de-chaussée.",
        "Le coût des travaux est estimé à deux millions d'euros, dont une partie sera financée par la région.",
        "Pendant le chantier, un petit point de prêt restera ouvert à la mairie.",
        "Le maire a rappelé que la bibliothèque est un lieu de rencontre essentiel pour toutes les générations.",
        "Certains élus estiment toutefois que le calendrier est beaucoup trop serré.",
        "À l'automne, de nouveaux ateliers seront proposés aux enfants et aux personnes âgées.",
        "La municipalité informera régulièrement les habitants de l'avancement des travaux.",
        "Les personnes intéressées peuvent poser leurs questions chaque jeudi au guichet d'accueil.",
    ],
    "es": [
        "El ayuntamiento decidió el martes renovar la antigua biblioteca municipal antes del próximo verano.",
        "Durante años, muchos vecinos se habían quejado de la falta de espacio y de luz natural.",
        "Según los planos del arquitecto, en la planta baja habrá una amplia sala de lectura.",
        "El coste de las obras se calcula en unos dos millones de euros, y la región pagará una parte.",
        "Mientras duren los trabajos, un pequeño punto de préstamo seguirá abierto en el ayuntamiento.",
        "La alcaldesa recordó que la biblioteca es un lugar de encuentro fundamental para todas las edades.",
        "Algunos concejales, sin embargo, consideran que el calendario es demasiado ajustado.",
        "En otoño se ofrecerán nuevos talleres para niños y para personas mayores.",
        "El ayuntamiento informará periódicamente a los ciudadanos sobre el avance de las obras.",
        "Quien tenga preguntas puede acudir cada jueves a la oficina de atención al ciudadano.",
    ],
}

# ---- page chrome ---------------------------------------------------------------------------------------------

NAV = ["Home", "News", "Guides", "Reviews", "Community", "Shop", "About", "Contact"]
SIDEBAR = [
    "Ten tools every beginner should own",
    "Our editors' picks for spring",
    "Reader questions answered",
    "The best budget gear this year",
    "Subscribe to our newsletter",
    "Meet the team",
]

# ---- special pages: one or two per file for each filter -------------------------------------------------------

# Filled in with str.format(file_idx=, site=, phone=, ip=): the contact details differ per file.
PII_PARAGRAPHS = [
    "For questions about this article, write to editor{file_idx}@{site} or call our desk on "
    "+1 (555) 013-{phone:04d}. Readers in Europe can also reach us at office.eu@example.org.",
    "Our comments server at 93.184.216.{ip} and the mirror at 2606:2800:220:1:248:1893:25c8:1946 were "
    "briefly offline last week, while the internal host 192.168.1.20 was not affected.",
]
SPAM_KEYWORDS = ["cheap watches", "best vpn deals", "buy followers fast", "discount phone cases"]
# One post per caption; the tags differ per post so that only the hash ratio, not repetition, flags the page.
HASHTAG_CAPTIONS = [
    "What a day at the beach with the whole family and the dog.",
    "Sunset walk after dinner, the sky was on fire tonight.",
    "Coffee and a good book on the terrace before the rain came.",
    "Late stroll through the old town with friends from school.",
]
HASHTAG_SETS = [
    ["travel", "sunset", "beach", "love", "summer", "photo"],
    ["family", "dog", "weekend", "sea", "waves", "fun"],
    ["coffee", "books", "terrace", "rain", "cozy", "mood"],
    ["city", "night", "lights", "walk", "friends", "autumn"],
]
# Long enough that the n-gram rules do not fire before the short-document rule does.
MOVED_NOTICE = (
    "This page has moved to our new address. Please update your bookmarks, and thank you for reading our "
    "weekly guides over the years. The archive will stay online until the end of the summer."
)
CLOSING_LINE = "Thank you for reading, and do let us know how your own first season goes."
LOREM_IPSUM = (
    "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut "
    "labore et dolore magna aliqua."
)
CONFIG_SENTENCE = (
    'In the config file, write the settings as {"debug": true, "port": 8080} and then restart '
    "the server before testing again."
)
CATALOGUE_ITEMS = [
    "Blue cotton shirt with long sleeves",
    "Green linen jacket, two deep pockets",
    "Black wool trousers for the office",
    "Grey denim scarf in a gift box",
    "White canvas bag that folds flat",
    "Red leather boots to the knee",
    "Navy fleece hoodie of recycled yarn",
    "Brown silk dress with a belt",
    "Yellow rain coat and matching hat",
    "Purple knitted gloves for children",
    "Orange sports socks in packs of five",
    "Pink summer skirt made to last",
]
CATALOGUE_NOTE = "Prices include tax and delivery to most of the country"
RICE_STEPS = [
    "Wash the rice twice.",
    "Soak it for an hour.",
    "Drain it well.",
    "Add water to the pot.",
    "Bring it to a boil.",
    "Turn the heat down low.",
    "Cover it with a lid.",
    "Wait for twelve minutes.",
    "Turn off the heat.",
    "Let it rest a while.",
    "Fluff it with a fork.",
    "Serve it with the curry.",
    "Keep the rest covered.",
    "Eat it within a day.",
    "Do not reheat it twice.",
    "Enjoy the meal with us.",
]
APP_SHELL = "<div id='root'></div><script>render(document.getElementById('root'));</script>"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MINIMAL_PDF = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj<</Type/Catalog>>endobj\ntrailer<</Root 1 0 R>>\n%%EOF\n"
