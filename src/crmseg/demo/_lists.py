"""Small built-in lists the demo shop draws from (names, places, products)."""

from __future__ import annotations

FEMALE_NAMES = (
    "Anna",
    "Lena",
    "Lea",
    "Sophie",
    "Marie",
    "Laura",
    "Julia",
    "Sarah",
    "Hannah",
    "Emma",
    "Mia",
    "Lisa",
    "Katharina",
    "Johanna",
    "Clara",
    "Nina",
    "Paula",
    "Elena",
    "Chloé",
    "Camille",
    "Manon",
    "Inès",
    "Sanne",
    "Fleur",
    "Emily",
    "Olivia",
    "Grace",
    "Jessica",
    "Ashley",
    "Megan",
)
MALE_NAMES = (
    "Lukas",
    "Jonas",
    "Felix",
    "Max",
    "Paul",
    "Leon",
    "Tim",
    "Jan",
    "Finn",
    "Niklas",
    "Jürgen",
    "Stefan",
    "Thomas",
    "Michael",
    "Lucas",
    "Hugo",
    "Louis",
    "Daan",
    "Sem",
    "James",
    "Oliver",
    "Jack",
    "Daniel",
    "Ryan",
    "Tobias",
    "Matteo",
    "Noah",
    "Elias",
    "David",
    "Simon",
)
LAST_NAMES = (
    "Müller",
    "Schmidt",
    "Schneider",
    "Fischer",
    "Weber",
    "Meyer",
    "Wagner",
    "Becker",
    "Schulz",
    "Hoffmann",
    "Koch",
    "Richter",
    "Klein",
    "Wolf",
    "Schröder",
    "Neumann",
    "Schwarz",
    "Braun",
    "Huber",
    "Gruber",
    "Bauer",
    "Keller",
    "Martin",
    "Bernard",
    "Dubois",
    "Lefèvre",
    "de Jong",
    "Jansen",
    "Smith",
    "Jones",
    "Taylor",
    "Brown",
    "Williams",
    "Johnson",
    "Miller",
    "Wilson",
    "Zimmermann",
    "Krüger",
    "Hartmann",
    "Lange",
)

# (code, weight, calling code, trunk prefix, mobile prefixes, currency, ((region, city), ...))
# Mobile prefixes are chosen so prefix + 7 digits is a valid national mobile number.
COUNTRIES: tuple[
    tuple[str, float, str, str, tuple[str, ...], str, tuple[tuple[str, str], ...]], ...
] = (
    (
        "DE",
        0.46,
        "49",
        "0",
        ("160", "170", "171", "176"),
        "EUR",
        (
            ("Bayern", "München"),
            ("Berlin", "Berlin"),
            ("Hamburg", "Hamburg"),
            ("Nordrhein-Westfalen", "Köln"),
            ("Hessen", "Frankfurt am Main"),
            ("Baden-Württemberg", "Stuttgart"),
            ("Sachsen", "Leipzig"),
        ),
    ),
    (
        "AT",
        0.10,
        "43",
        "0",
        ("650", "660", "664", "676"),
        "EUR",
        (
            ("Wien", "Wien"),
            ("Steiermark", "Graz"),
            ("Oberösterreich", "Linz"),
            ("Tirol", "Innsbruck"),
        ),
    ),
    (
        "CH",
        0.09,
        "41",
        "0",
        ("76", "78", "79"),
        "CHF",
        (
            ("Zürich", "Zürich"),
            ("Bern", "Bern"),
            ("Genève", "Genève"),
            ("Basel-Stadt", "Basel"),
        ),
    ),
    (
        "FR",
        0.09,
        "33",
        "0",
        ("61", "62", "66", "77"),
        "EUR",
        (
            ("Île-de-France", "Paris"),
            ("Auvergne-Rhône-Alpes", "Lyon"),
            ("Provence-Alpes-Côte d'Azur", "Marseille"),
        ),
    ),
    (
        "NL",
        0.08,
        "31",
        "0",
        ("61", "62", "63", "64"),
        "EUR",
        (
            ("Noord-Holland", "Amsterdam"),
            ("Zuid-Holland", "Rotterdam"),
            ("Utrecht", "Utrecht"),
        ),
    ),
    (
        "GB",
        0.07,
        "44",
        "0",
        ("770", "771", "780", "740"),
        "GBP",
        (
            ("England", "London"),
            ("England", "Manchester"),
            ("Scotland", "Edinburgh"),
        ),
    ),
    (
        "US",
        0.05,
        "1",
        "",
        ("212", "415", "512", "617"),
        "USD",
        (
            ("NY", "New York"),
            ("CA", "San Francisco"),
            ("TX", "Austin"),
            ("MA", "Boston"),
        ),
    ),
    (
        "BE",
        0.03,
        "32",
        "0",
        ("47", "48", "49"),
        "EUR",
        (
            ("Brussels", "Bruxelles"),
            ("Flanders", "Antwerpen"),
        ),
    ),
    (
        "IT",
        0.03,
        "39",
        "",
        ("320", "333", "347"),
        "EUR",
        (
            ("Lombardia", "Milano"),
            ("Lazio", "Roma"),
        ),
    ),
)

EMAIL_DOMAINS = (
    "gmail.com",
    "web.de",
    "gmx.de",
    "outlook.com",
    "yahoo.com",
    "icloud.com",
    "t-online.de",
    "gmx.at",
    "hotmail.com",
    "example.com",
)
DACH_DOMAINS = ("web.de", "gmx.de", "t-online.de", "gmx.at")
EMAIL_DOMAIN_WEIGHTS = (0.28, 0.12, 0.12, 0.1, 0.07, 0.08, 0.06, 0.04, 0.08, 0.05)

CATEGORIES = ("skincare", "makeup", "haircare", "fragrance", "body", "accessories")
CATEGORY_WEIGHTS = (0.30, 0.22, 0.15, 0.12, 0.13, 0.08)
CATEGORY_MARGINS = (0.55, 0.5, 0.48, 0.38, 0.5, 0.42)

PRODUCTS: dict[str, tuple[str, ...]] = {
    "skincare": (
        "Hydrating Serum",
        "Daily Moisturizer",
        "Gentle Cleanser",
        "Vitamin C Serum",
        "Night Cream",
        "Eye Cream",
        "SPF 50 Fluid",
        "Clay Mask",
    ),
    "makeup": (
        "Matte Lipstick",
        "Volume Mascara",
        "Liquid Foundation",
        "Concealer",
        "Eyeshadow Palette",
        "Blush",
        "Brow Pencil",
        "Setting Powder",
    ),
    "haircare": (
        "Repair Shampoo",
        "Silk Conditioner",
        "Hair Oil",
        "Dry Shampoo",
        "Curl Cream",
        "Heat Protect Spray",
        "Hair Mask",
        "Scalp Serum",
    ),
    "fragrance": (
        "Eau de Parfum Bloom",
        "Eau de Toilette Cedar",
        "Body Mist Citrus",
        "Parfum Noir",
        "Travel Spray Set",
        "Eau Fraiche",
        "Solid Perfume",
        "Fragrance Discovery Set",
    ),
    "body": (
        "Body Lotion",
        "Shower Gel",
        "Body Scrub",
        "Hand Cream",
        "Body Oil",
        "Deodorant",
        "Foot Balm",
        "Bath Salts",
    ),
    "accessories": (
        "Makeup Brush Set",
        "Jade Roller",
        "Cosmetic Bag",
        "Hair Clips",
        "Sponge Set",
        "Mirror",
        "Headband",
        "Gift Box",
    ),
}

ACQUISITION_CHANNELS = ("organic", "paid_search", "social", "referral", "affiliate", "email")
ACQUISITION_WEIGHTS = (0.34, 0.24, 0.2, 0.1, 0.07, 0.05)

LOYALTY_TIERS = ("bronze", "silver", "gold", "platinum")

ORDER_CHANNELS = ("web", "app", "store")
ORDER_CHANNEL_WEIGHTS = (0.55, 0.3, 0.15)

COMPANY_WORDS = ("Nordlicht", "Alpen", "Blau", "Kontor", "Studio", "Werk", "Lumen", "Hafen")
COMPANY_SUFFIXES = ("GmbH", "AG", "UG", "SARL", "BV", "Ltd", "Inc")
INDUSTRIES = ("retail", "beauty_salon", "agency", "ecommerce", "healthcare", "education")

INTEGRATIONS = ("shopify", "mailchimp", "slack", "hubspot", "zapier")
REVIEW_COMMENTS = (  # by star, 1-5
    "Arrived damaged and support never answered.",
    "Not as described, sent it back.",
    "Fine, nothing special.",
    "Good quality, would buy again.",
    "Love it, my new favourite!",
)
TICKET_KINDS = ("delivery", "return", "billing", "product_question", "complaint", "account")
TICKET_KIND_WEIGHTS = (0.28, 0.22, 0.12, 0.2, 0.1, 0.08)
