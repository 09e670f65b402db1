"""Everyday synonyms per attribute value: a thesaurus widening of the reader's ``MEANINGS``.

Written from the schema's value names (the PA-100K bit names and the vehicle colour, type and
brand vocabularies in :mod:`pipeline.schema`) and general English only, without seeing any
caption bank. Each phrase is what a person typing a search query might write to state exactly one
attribute value; the key set is the key set of ``pipeline.baseline.reader.MEANINGS``.

Rules the table keeps (checked by tests/code/test_baseline_reader.py):

* every phrase names exactly one key (a phrase under two keys would say nothing);
* every phrase has 1 to 3 content words once ``FUNCTION_WORDS`` are removed from its ``tokens``;
* no digits (the reader drops a caption's digits: "over 60" would read as "over");
* no negated phrases and no words for absence ("no hat", "plain");
* no generic words that state no value ("car", "vehicle", "person", "bag", "shirt", "top").

Words left out on purpose are named in the comments next to the entry they would belong to.
"""

from __future__ import annotations

SYNONYMS: dict[tuple[str, str], tuple[str, ...]] = {
    # ------------------------------------------------------------------ pedestrian: gender
    # Pronouns are read elsewhere; "miss" and "ms" are left out ("miss" is also a verb).
    ("gender", "female"): (
        "female", "woman", "women", "lady", "ladies", "girl", "girls", "gal", "madam", "dame",
        "lass", "mother", "mom", "mum", "wife", "daughter", "sister", "aunt", "girlfriend",
        "housewife", "businesswoman", "policewoman", "saleswoman", "feminine", "womanly",
    ),
    ("gender", "male"): (
        "male", "man", "men", "boy", "boys", "guy", "guys", "gentleman", "gentlemen", "gent",
        "bloke", "dude", "fellow", "chap", "lad", "father", "dad", "husband", "brother", "son",
        "uncle", "mister", "boyfriend", "businessman", "policeman", "masculine",
    ),
    # ------------------------------------------------------------------ pedestrian: age
    # "older" (older than whom?) and "mature" (may mean 40-60) are left out as ambiguous.
    # Ages are spelled out: the reader drops a caption's digits, so "over 60" would read as "over".
    ("age", "over60"): (
        "old", "elderly", "elderly person", "elderly man", "elderly woman", "elderly lady",
        "senior", "seniors", "senior citizen", "pensioner", "retiree", "retired", "oap",
        "old man", "old woman", "old lady", "old person", "aged", "elder", "grandma", "grandpa",
        "grandmother", "grandfather", "granny", "grey-haired", "gray-haired", "white-haired",
        "over sixty",
    ),
    ("age", "18to60"): (
        "adult", "adults", "grown-up", "grownup", "grown man", "grown woman", "adult man",
        "adult woman", "young adult", "young man", "young woman", "young lady", "middle-aged",
        "middle-aged man", "middle-aged woman", "working-age", "college student",
        "university student", "twenties", "thirties", "forties", "fifties", "twentysomething",
        "thirtysomething",
    ),
    # "youth" is left out: it is used for young adults as well as for teenagers.
    ("age", "under18"): (
        "child", "children", "kid", "kids", "kiddo", "teen", "teens", "teenager", "teenage",
        "adolescent", "preteen", "tween", "youngster", "juvenile", "minor", "toddler",
        "schoolboy", "schoolgirl", "schoolchild", "school kid", "pupil", "little boy",
        "little girl", "young boy", "young girl", "small child", "young child",
        "under eighteen",
    ),
    # ------------------------------------------------------------------ pedestrian: orientation
    # "from the front", "from the side", "from the rear" are left out: without their function
    # words they shrink to the single words "front", "side", "rear", which also occur in
    # "holding a bag in front", "side bag" and the like. The "seen/viewed from ..." forms stay.
    # "back" alone is left out too ("bag on the back" is a backpack).
    ("orientation", "front"): (
        "facing the camera", "front view", "coming towards", "coming toward", "facing us",
        "facing forward", "facing the viewer", "towards the camera", "toward the camera",
        "towards us", "toward us", "looking at the camera", "head-on", "face-on", "front-on",
        "front-facing", "frontal view", "seen from the front", "viewed from the front",
        "approaching", "walking towards", "walking toward",
    ),
    ("orientation", "side"): (
        "side view", "profile", "profile view", "side profile", "sideways",
        "facing sideways", "side-on", "side-facing", "lateral view", "seen from the side",
        "viewed from the side", "facing left", "facing right", "walking left", "walking right",
        "left to right", "right to left", "walking past", "passing by", "walking across",
    ),
    ("orientation", "back"): (
        "back view", "rear view", "from behind", "seen from behind", "viewed from behind",
        "seen from the back", "viewed from the back", "seen from the rear", "back turned",
        "back to the camera", "back towards the camera", "back to us", "showing back",
        "back-facing", "rear-facing", "facing away", "turned away", "away from the camera",
        "walking away", "moving away", "heading away", "going away",
    ),
    # ------------------------------------------------------------------ pedestrian: accessories
    # "hood" is left out: it belongs to a coat or hoodie, not a separate hat. "bonnet" is left
    # out: it is also the British word for a car's hood.
    ("hat", "yes"): (
        "hat", "hats", "headwear", "headgear", "cap", "baseball cap", "peaked cap", "knit cap",
        "beanie", "bobble hat", "woolly hat", "bucket hat", "sun hat", "straw hat", "cowboy hat",
        "top hat", "fedora", "trilby", "beret", "sun visor", "helmet", "bike helmet",
        "motorcycle helmet", "hard hat",
    ),
    # "shades" is kept: in a pedestrian query it means sunglasses (colour shades are read in the
    # vehicle domain, where this group is not looked up).
    ("glasses", "yes"): (
        "glasses", "eyeglasses", "sunglasses", "sun glasses", "spectacles", "specs", "shades",
        "sunnies", "eyewear", "reading glasses", "aviators", "goggles", "bespectacled",
        "glasses-wearing",
    ),
    # "shopping bag" and "briefcase" are left out: a bag carried in the hand may be labelled as
    # a held object. "hobo bag" is left out: it is a handbag worn on the shoulder.
    ("handbag", "yes"): (
        "handbag", "handbags", "hand bag", "purse", "clutch", "clutch bag", "tote", "tote bag",
        "pocketbook", "evening bag", "wristlet", "bag in hand", "hand-held bag",
    ),
    ("bag", "shoulder"): (
        "shoulder bag", "bag over the shoulder", "bag on shoulder", "over-the-shoulder bag",
        "shoulder strap", "satchel", "messenger bag", "courier bag", "crossbody", "crossbody bag",
        "cross-body bag", "sling bag", "side bag", "slung bag", "bag slung over", "camera bag",
    ),
    ("bag", "backpack"): (
        "backpack", "backpacks", "back pack", "bag on the back", "rucksack", "knapsack",
        "daypack", "haversack", "school bag", "schoolbag", "book bag", "bookbag", "hiking pack",
        "pack on back",
    ),
    # Only things held in the hands in front; "holding a bag" is left out (handbag).
    ("holds_objects", "yes"): (
        "holding objects in front", "carrying things in hands", "holding something",
        "carrying something", "holding an object", "holding an item", "object in hand",
        "objects in hands", "hands full", "arms full", "holding a box", "carrying a box",
        "carrying a parcel", "holding a package", "holding an umbrella", "carrying an umbrella",
        "umbrella in hand", "holding a phone", "phone in hand", "holding a cup",
        "holding a drink", "holding a bottle", "holding a book", "holding papers",
        "holding a folder", "holding flowers", "holding food", "carrying a tray",
    ),
    # ------------------------------------------------------------------ pedestrian: clothing
    # Sleeveless tops count as short sleeves (each pedestrian has exactly one sleeve bit).
    # "vest" is left out (a sleeveless undershirt in British English, a waistcoat in American);
    # "graphic tee" is under logo.
    ("sleeve", "short"): (
        "short sleeves", "short sleeve", "short-sleeved", "short-sleeved shirt",
        "short-sleeve top", "short-sleeved blouse", "t-shirt", "t-shirts", "tshirt", "tee",
        "tee shirt", "tees", "polo shirt", "sleeveless", "tank top", "vest top", "singlet",
        "camisole", "halter top", "cap sleeves", "bare arms",
    ),
    # Jackets, sweaters and hoodies have long sleeves. "coat" is under long_coat (MEANINGS);
    # "jersey" is left out (sports jerseys are often short-sleeved); "dress shirt" is left out
    # ("dress" is a skirt word). "jumper" is kept in its British sense (a sweater), though in
    # American English it is a pinafore dress.
    ("sleeve", "long"): (
        "long sleeves", "long sleeve", "long-sleeved", "long-sleeved top", "long-sleeve shirt",
        "long-sleeved blouse", "full sleeves", "full-sleeved", "covered arms", "sweater",
        "jumper", "pullover", "cardigan", "hoodie", "sweatshirt", "turtleneck", "knitwear",
        "fleece", "jacket", "blazer", "suit jacket", "windbreaker", "bomber jacket",
        "denim jacket", "leather jacket",
    ),
    # "banded" is left out (bands are also colour panels, i.e. splice).
    ("upper", "stripe"): (
        "stripes", "striped", "stripe", "stripy", "stripey", "pinstripe", "pinstriped",
        "pin-striped", "striped shirt", "striped top", "striped sweater", "horizontal stripes",
        "vertical stripes", "candy stripes", "breton top",
    ),
    # "print" and "printed" alone are left out (a floral or plaid print is not a logo).
    ("upper", "logo"): (
        "logo", "logos", "print on the shirt", "printed logo", "brand logo", "brand print",
        "logo tee", "graphic tee", "graphic print", "printed t-shirt", "printed design",
        "emblem", "insignia", "crest", "monogram", "lettering", "printed text",
        "slogan", "text on shirt", "writing on shirt", "words on the shirt", "picture on shirt",
        "branded shirt",
    ),
    # "checked" and "checks" alone are left out (also verbs); "flannel" is a fabric, "argyle"
    # a diamond pattern, not plaid.
    ("upper", "plaid"): (
        "plaid", "plaid shirt", "checkered pattern", "checkered", "checkered shirt", "chequered",
        "checked shirt", "checked pattern", "check pattern", "tartan", "gingham",
        "buffalo check", "houndstooth", "madras", "checkerboard", "grid pattern",
        "lumberjack shirt",
    ),
    # "multicoloured" is left out: a print or stripes can be multicoloured too.
    ("upper", "splice"): (
        "spliced", "two-tone panels", "two-tone", "two-toned", "two-colour", "two-color",
        "colour-block", "color block", "colorblock", "colour-blocked", "color-blocked",
        "patchwork", "patched", "contrasting panels", "contrast panels", "panelled", "paneled",
        "stitched panels", "contrast sleeves", "contrasting colours", "contrasting colors",
        "half and half",
    ),
    # "mac" is left out (also the computer); "pea coat" and "anorak" are usually hip-length.
    ("long_coat", "yes"): (
        "long coat", "coat", "overcoat", "long overcoat", "trench coat", "trenchcoat",
        "greatcoat", "topcoat", "duster coat", "knee-length coat", "parka", "raincoat",
        "mackintosh", "long jacket", "long puffer", "down coat", "winter coat", "wool coat",
        "fur coat", "duffle coat", "lab coat",
    ),
    ("skirt", "yes"): (
        "skirt", "skirts", "dress", "dresses", "miniskirt", "mini skirt", "mini dress",
        "long skirt", "short skirt", "maxi skirt", "midi skirt", "pencil skirt",
        "pleated skirt", "denim skirt", "maxi dress", "sundress", "summer dress",
        "evening dress", "cocktail dress", "wedding dress", "gown", "gowns", "frock", "kilt",
        "sarong", "tutu",
    ),
    # ------------------------------------------------------------------ vehicle: colour
    # Shades between two base colours are left out: indigo, teal, turquoise, cyan, aqua
    # (blue/green/purple), beige, taupe, khaki, champagne, gold (brown/grey/yellow/white),
    # copper, rust, bronze, amber, coral, salmon (brown/orange/red/pink/yellow), magenta,
    # fuchsia, cerise, mauve (pink/purple/red), cream (white/yellow), "dark" and "light" alone.
    ("color", "black"): (
        "black", "jet black", "pitch black", "coal black", "midnight black", "piano black",
        "matte black", "gloss black", "blackish", "ebony", "onyx", "obsidian",
    ),
    ("color", "blue"): (
        "blue", "navy", "navy blue", "dark blue", "light blue", "sky blue", "baby blue",
        "royal blue", "powder blue", "electric blue", "midnight blue", "steel blue", "azure",
        "cobalt", "sapphire", "cerulean", "bluish",
    ),
    ("color", "brown"): (
        "brown", "dark brown", "light brown", "chocolate brown", "brownish", "tan", "chocolate",
        "coffee", "mocha", "chestnut", "caramel", "walnut", "mahogany", "umber",
    ),
    ("color", "green"): (
        "green", "dark green", "light green", "lime green", "olive green", "forest green",
        "bottle green", "racing green", "army green", "hunter green", "mint green", "emerald",
        "jade", "greenish",
    ),
    ("color", "grey"): (
        "grey", "gray", "silver", "silvery", "light grey", "dark grey", "light gray",
        "dark gray", "metallic grey", "ash grey", "dove grey", "steel grey", "slate grey",
        "gunmetal", "charcoal", "graphite", "pewter", "greyish", "grayish",
    ),
    ("color", "orange"): (
        "orange", "bright orange", "dark orange", "burnt orange", "neon orange",
        "safety orange", "tangerine", "mandarin", "pumpkin", "orangey", "orangish",
    ),
    ("color", "pink"): (
        "pink", "hot pink", "light pink", "pale pink", "baby pink", "pastel pink", "rose pink",
        "bubblegum pink", "candy pink", "blush", "pinkish",
    ),
    ("color", "purple"): (
        "purple", "dark purple", "light purple", "royal purple", "violet", "lavender", "lilac",
        "plum", "aubergine", "eggplant", "amethyst", "purplish",
    ),
    # "cherry" here is why the Chery misspelling "cherry" is not a brand phrase.
    ("color", "red"): (
        "red", "dark red", "bright red", "cherry red", "wine red", "blood red", "brick red",
        "crimson", "scarlet", "maroon", "burgundy", "claret", "cherry", "ruby", "vermilion",
        "carmine", "reddish",
    ),
    ("color", "white"): (
        "white", "pure white", "bright white", "snow white", "pearl white", "off-white",
        "milky white", "arctic white", "pearl", "ivory", "alabaster", "whitish",
    ),
    ("color", "yellow"): (
        "yellow", "bright yellow", "pale yellow", "lemon yellow", "canary yellow",
        "mustard yellow", "golden yellow", "taxi yellow", "yellowish",
    ),
    # ------------------------------------------------------------------ vehicle: type
    # In this (Chinese) traffic data a Microbus is the small box-shaped "bread van" and a
    # Minivan is an MPV, so "van" alone is left out (it could mean either), as are "car",
    # "passenger car", "family car", "seven-seater", "4wd", "estate car" and "coupe".
    ("type", "Bus"): (
        "bus", "buses", "coach", "motorcoach", "city bus", "public bus",
        "transit bus", "passenger bus", "intercity bus", "tour bus", "school bus",
        "double-decker", "articulated bus",
    ),
    ("type", "Microbus"): (
        "microbus", "micro bus", "minibus", "mini bus", "small bus", "light bus", "minicoach",
        "microvan", "micro van", "bread van", "loaf van",
    ),
    ("type", "Minivan"): (
        "minivan", "mini van", "mpv", "people carrier", "people mover",
        "multi-purpose vehicle", "multipurpose vehicle", "family minivan",
    ),
    # "jeep" is a brand key, so it is not an SUV word here.
    ("type", "SUV"): (
        "suv", "suvs", "sport utility vehicle", "sports utility vehicle", "crossover",
        "crossover suv", "cuv", "4x4", "four-by-four", "off-roader",
        "off-road vehicle",
    ),
    # "hatchback" is kept as the nearest type: the six types have no separate hatchback class.
    ("type", "Sedan"): (
        "sedan", "sedans", "saloon", "saloon car", "sedan car", "family sedan",
        "compact sedan", "four-door sedan", "notchback", "hatchback", "limousine", "limo",
    ),
    # "heavy truck" is left out: it is part of the brand "Balong Heavy Truck".
    ("type", "Truck"): (
        "truck", "trucks", "lorry", "lorries", "heavy goods vehicle", "hgv", "goods vehicle",
        "cargo truck", "box truck", "delivery truck", "dump truck", "tipper", "flatbed",
        "semi-truck", "tractor-trailer", "articulated lorry", "big rig", "eighteen-wheeler",
        "cement mixer", "pickup truck",
    ),
    # ------------------------------------------------------------------ vehicle: brand
    # Names as people type them, with common nicknames, abbreviations and misspellings. Phrases
    # combining two brand names ("faw xiali", "iveco hongyan") are left out.
    ("brand", "Audi"): ("audi", "audis"),
    ("brand", "BAOJUN"): ("baojun", "bao jun"),
    # Bestune is FAW's former Besturn (Benteng) line.
    ("brand", "BESTUNE"): ("bestune", "besturn", "benteng"),
    ("brand", "BMW"): ("bmw", "bmws", "beemer", "bimmer", "beamer"),
    ("brand", "BYD"): ("byd", "build your dreams"),
    ("brand", "Balong Heavy Truck"): ("balong heavy truck", "balong"),
    ("brand", "Bentley"): ("bentley", "bently"),
    ("brand", "Benz"): ("benz", "mercedes", "mercedes-benz", "merc", "mercedez"),
    ("brand", "Buick"): ("buick", "buicks"),
    # "caddy" is left out: it is also a Volkswagen model.
    ("brand", "Cadillac"): ("cadillac", "cadilac", "caddilac"),
    # Chana is Changan's former export name ("chang'an" would lose "an", a function word).
    ("brand", "Chana"): ("chana", "changan"),
    ("brand", "Chery"): ("chery", "qirui"),
    ("brand", "Chevrolet"): ("chevrolet", "chevy", "chevvy", "chev", "chevrolette"),
    ("brand", "China-Moto"): ("china moto", "chinamoto"),
    # "citroën" tokenises to "citro n" (tokens keep only a-z0-9); kept as people type it.
    ("brand", "Citroen"): ("citroen", "citroën", "citreon"),
    ("brand", "Dongfeng"): ("dongfeng", "dong feng", "dfm", "dongfeng motor"),
    ("brand", "FAW"): ("faw", "first automobile works", "yiqi", "jiefang"),
    ("brand", "FORLAND"): ("forland", "forland truck"),
    ("brand", "FOTON"): ("foton", "futian"),
    ("brand", "Ford"): ("ford", "fords"),
    ("brand", "Geely"): ("geely", "geeley", "jili"),
    # "jinlong" is left out: it is the pinyin of both Golden Dragon and King Long.
    ("brand", "Golden Dragon"): ("golden dragon", "xiamen golden dragon"),
    ("brand", "GreatWall"): ("great wall", "greatwall", "great wall motors", "gwm", "haval"),
    ("brand", "HAFEI"): ("hafei", "ha fei"),
    ("brand", "Haima"): ("haima", "hai ma"),
    ("brand", "Honda"): ("honda", "hondas"),
    ("brand", "Hongyan"): ("hongyan", "hong yan"),
    ("brand", "Hyundai"): ("hyundai", "hyundia", "hundai", "hyndai"),
    ("brand", "Infiniti"): ("infiniti", "infinity"),
    ("brand", "Isuzu"): ("isuzu", "izuzu"),
    ("brand", "Iveco"): ("iveco", "naveco"),
    ("brand", "JAC"): ("jac", "jac motors", "jianghuai"),
    ("brand", "JMC"): ("jmc", "jiangling", "jiangling motors"),
    ("brand", "Jeep"): ("jeep", "jeeps"),
    ("brand", "Jinbei"): ("jinbei", "jin bei"),
    ("brand", "KINGLONG"): ("kinglong", "king long", "xiamen king long"),
    ("brand", "Karma"): ("karma", "karma automotive", "fisker karma"),
    ("brand", "Kia"): ("kia", "kias"),
    ("brand", "LEOPAARD"): ("leopaard", "leopard", "liebao"),
    # Range Rover is a Land Rover line, labelled with the maker's name.
    ("brand", "Landrover"): ("land rover", "landrover", "range rover"),
    ("brand", "Lexus"): ("lexus", "lexas"),
    ("brand", "Luxgen"): ("luxgen",),
    ("brand", "MORRIS-GARAGE"): ("mg", "morris garage", "morris garages", "mg motor"),
    ("brand", "Mazda"): ("mazda", "madza"),
    ("brand", "Mini"): ("mini", "mini cooper"),
    ("brand", "Mitsubishi"): ("mitsubishi", "mitsubushi", "mitsubishi motors"),
    ("brand", "Nissan"): ("nissan", "nisan"),
    ("brand", "OPEL"): ("opel", "opels"),
    ("brand", "PEUGEOT"): ("peugeot", "peugot", "pugeot", "peugeut"),
    ("brand", "Porsche"): ("porsche", "porshe", "porche", "porsch"),
    ("brand", "ROEWE"): ("roewe", "rongwei"),
    # SGMW is SAIC-GM-Wuling, sold as Wuling.
    ("brand", "SGMW"): ("sgmw", "wuling", "saic gm wuling"),
    # "škoda" tokenises to "koda"; kept as people type it.
    ("brand", "SKODA"): ("skoda", "škoda"),
    ("brand", "Shacman"): ("shacman", "shaanxi automobile", "shaanqi"),
    ("brand", "Shuanghuan"): ("shuanghuan", "shuang huan"),
    ("brand", "Soueast"): ("soueast", "soueast motor", "south east motor"),
    # The release's "Style" is a brand name that is also an everyday word; nothing else is added.
    ("brand", "Style"): ("style",),
    ("brand", "Subaru"): ("subaru", "subarus", "subie"),
    ("brand", "Suzuki"): ("suzuki", "suzukis"),
    ("brand", "Toyota"): ("toyota", "toyotas", "toyata"),
    ("brand", "Volkswagen"): ("volkswagen", "vw", "vee dub", "vdub"),
    ("brand", "Volvo"): ("volvo", "volvos"),
    ("brand", "XIALI"): ("xiali", "tianjin xiali"),
    ("brand", "Yutong"): ("yutong", "yu tong"),
    ("brand", "ZXAUTO"): ("zxauto", "zx auto", "zhongxing"),
}
