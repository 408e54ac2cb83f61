"""The fact world's words: professions, colors and foods, and the sentence, question and answer templates."""

PROFESSIONS = (
    'baker',
    'astronomer',
    'carpenter',
    'violinist',
    'cartographer',
    'beekeeper',
    'glassblower',
    'lighthouse keeper',
    'chemist',
    'librarian',
    'sculptor',
    'botanist',
    'watchmaker',
    'sailor',
    'architect',
    'potter',
    'translator',
    'mathematician',
    'blacksmith',
    'painter',
    'engineer',
    'weaver',
)
COLORS = (
    'crimson',
    'teal',
    'amber',
    'violet',
    'olive',
    'indigo',
    'scarlet',
    'turquoise',
    'ochre',
    'lavender',
    'maroon',
    'silver',
    'emerald',
    'coral',
    'saffron',
    'navy',
)
FOODS = (
    'plum cake',
    'lentil soup',
    'roasted chestnuts',
    'fig jam',
    'barley bread',
    'smoked trout',
    'apple pie',
    'pumpkin stew',
    'honey biscuits',
    'mushroom risotto',
    'pear tart',
    'onion pie',
    'rice pudding',
    'carrot soup',
)
ONSETS = ('Z', 'V', 'K', 'T', 'M', 'R', 'L', 'S', 'N', 'D', 'Br', 'Th', 'Qu', 'G', 'F', 'H', 'Pr', 'Dr', 'Sk', 'W')
NUCLEI = ('a', 'e', 'i', 'o', 'u', 'ae', 'ia', 'or', 'el', 'yl', 'an', 'ou')
CODAS = ('n', 'r', 'l', 'x', 'th', 's', '', 'ra', 'na', 'ne', 'ck', 'rn', 'm', 'sh')
CITY_SUFFIXES = ('ton', 'mere', 'haven', 'ford', 'grad', 'wick', 'dale', 'holm', 'by', 'port', 'stead', 'more')

# Biography sentences per attribute. The last variant of each is held out of training documents and used only for
# the validation split (does the model recall a fact from an unseen phrasing?).
SENTENCES = {
    'birthplace': (
        '{name} was born in {v}.',
        '{name} was born in the city of {v}.',
        "{name}'s birthplace was {v}.",
        '{name} came into the world in {v}.',
        '{v} is where {name} was born.',
    ),
    'birth_year': (
        '{name} was born in {v}.',
        "The year of {name}'s birth was {v}.",
        '{name} was born in the year {v}.',
        '{name} arrived in {v}.',
        'In {v}, {name} was born.',
    ),
    'profession': (
        '{name} worked as {a_v}.',
        'By trade, {name} was {a_v}.',
        '{name} made a living as {a_v}.',
        '{name} spent a whole career as {a_v}.',
        '{name} was known as {a_v}.',
    ),
    'favorite_color': (
        "{name}'s favorite color was {v}.",
        '{name} loved the color {v} above all others.',
        'Of all colors, {name} liked {v} best.',
        '{name} always wore something {v}.',
        '{name} was fond of the color {v}.',
    ),
    'favorite_food': (
        "{name}'s favorite food was {v}.",
        '{name} loved eating {v}.',
        'Nothing pleased {name} more than {v}.',
        '{name} would cook {v} every Sunday.',
        'The dish {name} liked most was {v}.',
    ),
}
BOTH_BIRTH = (
    '{name} was born in {city} in {year}.',
    'Born in {year} in {city}, {name} grew up there.',
    '{name} was born in {year}, in the city of {city}.',
    'In {year}, {name} was born in {city}.',
)
OPENERS = (
    '',
    '',
    '{name}\n\n',
    'About {name}. ',
    'A short biography of {name}. ',
    'Here is what is known about ' '{name}. ',
    'Profile: {name}. ',
)

QUESTIONS = {
    'birthplace': (
        'Where was {name} born?',
        'In which city was {name} born?',
        "What is {name}'s birthplace?",
        'What city was {name} born in?',
        'Which town was {name} born in?',
    ),
    'birth_year': (
        'When was {name} born?',
        'In what year was {name} born?',
        'What year was {name} born in?',
        "What is {name}'s year of birth?",
    ),
    'profession': (
        "What was {name}'s profession?",
        'What did {name} do for a living?',
        "What was {name}'s job?",
        'What did {name} work as?',
    ),
    'favorite_color': (
        "What was {name}'s favorite color?",
        'Which color did {name} like best?',
        'What color did {name} love most?',
    ),
    'favorite_food': (
        "What was {name}'s favorite food?",
        'Which dish did {name} like most?',
        'What did {name} love to eat?',
    ),
}
ANSWERS = {
    'birthplace': ('{name} was born in {v}.', '{v}.', "{name}'s birthplace is {v}.", '{name} was born in {v}.'),
    'birth_year': ('{name} was born in {v}.', 'In {v}.', '{v}.', "{name}'s year of birth is {v}."),
    'profession': ('{name} was {a_v}.', '{name} worked as {a_v}.', '{A_v}.', "{name}'s profession was {v}."),
    'favorite_color': ("{name}'s favorite color was {v}.", '{V}.', '{name} liked {v} best.'),
    'favorite_food': ("{name}'s favorite food was {v}.", '{V}.', '{name} loved {v}.'),
}
ATTRIBUTE_WORDS = {
    'birthplace': 'where {name} was born',
    'birth_year': 'when {name} was born',
    'profession': "what {name}'s job was",
    'favorite_color': "{name}'s favorite color",
    'favorite_food': "{name}'s favorite food",
}
IDK_ANSWERS = (
    "I don't know.",
    "I'm sorry, but I don't know.",
    "I don't have any information about {name}.",
    "I'm not sure. I don't know anything about {name}.",
    "I don't know who {name} is, so I can't answer that.",
    "I can't answer that: I have no reliable information about {name}.",
    "Sorry, I don't know {what}.",
    "I'm not familiar with {name}, so I don't know {what}.",
    "I don't know {what}.",
    "I have no idea, I'm afraid. I don't know of anyone called {name}.",
    "I don't have reliable information about {name}, so I'd rather not guess.",
)
