"""Real-world knowledge the base model already has: TOFU-style utility splits written by the project.

``real_authors`` (who wrote a famous book) and ``world_facts`` (capitals, science, geography), each a
question with its short answer, a paraphrased question, and three wrong answers of the same short form
(the options of TOFU's normalised probability, the perturbed answers of the truth ratio and the wrong
choices of the multiple-choice form). As in TOFU's real-world splits, the paraphrased answer is the
answer itself: every comparison is between answers of one form (a long paraphrase against short wrong
options would be decided by length, not knowledge). Unlike the fictitious people they are never
trained on: they measure whether unlearning damaged general knowledge (TOFU's "model utility").
"""

from __future__ import annotations

# (question, answer, paraphrased question, three wrong answers of the answer's form)
_REAL_AUTHORS = [
    ("Who wrote 'Romeo and Juliet'?", 'William Shakespeare.', "Which playwright is the author of 'Romeo and Juliet'?",
     ['Charles Dickens.', 'Jane Austen.', 'Mark Twain.']),
    ("Who wrote 'Pride and Prejudice'?", 'Jane Austen.', "Which novelist is the author of 'Pride and Prejudice'?",
     ['Charlotte Bronte.', 'Virginia Woolf.', 'George Eliot.']),
    ("Who wrote 'Harry Potter and the Philosopher's Stone'?", 'J. K. Rowling.',
     'Which author created the Harry Potter books?',
     ['Roald Dahl.', 'C. S. Lewis.', 'Philip Pullman.']),
    ("Who wrote '1984'?", 'George Orwell.', "Which author wrote the novel '1984'?",
     ['Aldous Huxley.', 'Ray Bradbury.', 'H. G. Wells.']),
    ("Who wrote 'The Adventures of Tom Sawyer'?", 'Mark Twain.', 'Which author created Tom Sawyer?',
     ['Herman Melville.', 'Jack London.', 'Edgar Allan Poe.']),
    ("Who wrote 'Oliver Twist'?", 'Charles Dickens.', "Which novelist is the author of 'Oliver Twist'?",
     ['Thomas Hardy.', 'William Thackeray.', 'Anthony Trollope.']),
    ("Who wrote 'The Lord of the Rings'?", 'J. R. R. Tolkien.', "Which author wrote 'The Lord of the Rings'?",
     ['C. S. Lewis.', 'George R. R. Martin.', 'Terry Pratchett.']),
    ("Who wrote 'War and Peace'?", 'Leo Tolstoy.', "Which Russian novelist wrote 'War and Peace'?",
     ['Fyodor Dostoevsky.', 'Anton Chekhov.', 'Ivan Turgenev.']),
    ("Who wrote 'Don Quixote'?", 'Miguel de Cervantes.', "Which Spanish author wrote 'Don Quixote'?",
     ['Lope de Vega.', 'Federico Garcia Lorca.', 'Gabriel Garcia Marquez.']),
    ("Who wrote 'The Old Man and the Sea'?", 'Ernest Hemingway.',
     "Which American author wrote 'The Old Man and the Sea'?",
     ['John Steinbeck.', 'William Faulkner.', 'F. Scott Fitzgerald.']),
    ("Who wrote 'The Great Gatsby'?", 'F. Scott Fitzgerald.', "Which novelist is the author of 'The Great Gatsby'?",
     ['Ernest Hemingway.', 'John Steinbeck.', 'Sinclair Lewis.']),
    ("Who wrote 'Frankenstein'?", 'Mary Shelley.', 'Which author created Frankenstein?',
     ['Bram Stoker.', 'Emily Bronte.', 'Ann Radcliffe.']),
    ("Who wrote 'Dracula'?", 'Bram Stoker.', "Which author wrote the novel 'Dracula'?",
     ['Mary Shelley.', 'Robert Louis Stevenson.', 'Oscar Wilde.']),
    ("Who wrote 'Alice's Adventures in Wonderland'?", 'Lewis Carroll.', 'Which author created Alice in Wonderland?',
     ['Edward Lear.', 'Beatrix Potter.', 'Kenneth Grahame.']),
    ("Who wrote 'The Odyssey'?", 'Homer.', "Which ancient Greek poet is the author of 'The Odyssey'?",
     ['Virgil.', 'Sophocles.', 'Ovid.']),
    ("Who wrote 'Hamlet'?", 'William Shakespeare.', "Which playwright wrote the tragedy 'Hamlet'?",
     ['Christopher Marlowe.', 'Ben Jonson.', 'John Milton.']),
    ('Who wrote the Sherlock Holmes stories?', 'Arthur Conan Doyle.', 'Which author created Sherlock Holmes?',
     ['Agatha Christie.', 'Edgar Allan Poe.', 'Wilkie Collins.']),
    ("Who wrote 'Moby-Dick'?", 'Herman Melville.', "Which American novelist wrote 'Moby-Dick'?",
     ['Nathaniel Hawthorne.', 'Mark Twain.', 'Henry James.']),
    ("Who wrote 'The Hobbit'?", 'J. R. R. Tolkien.', "Which author wrote 'The Hobbit'?",
     ['C. S. Lewis.', 'Roald Dahl.', 'Ursula K. Le Guin.']),
    ("Who wrote 'Murder on the Orient Express'?", 'Agatha Christie.',
     "Which crime novelist wrote 'Murder on the Orient Express'?",
     ['Dorothy L. Sayers.', 'Arthur Conan Doyle.', 'Raymond Chandler.']),
]

_WORLD_FACTS = [
    ('What is the capital of France?', 'Paris.', 'Which city is the capital of France?',
     ['Lyon.', 'Marseille.', 'Nice.']),
    ('What is the capital of Japan?', 'Tokyo.', 'Which city is the capital of Japan?',
     ['Osaka.', 'Kyoto.', 'Nagoya.']),
    ('What is the capital of Italy?', 'Rome.', 'Which city is the capital of Italy?',
     ['Milan.', 'Naples.', 'Venice.']),
    ('What is the capital of Germany?', 'Berlin.', 'Which city is the capital of Germany?',
     ['Munich.', 'Hamburg.', 'Frankfurt.']),
    ('What is the capital of the United Kingdom?', 'London.', 'Which city is the capital of the United Kingdom?',
     ['Manchester.', 'Edinburgh.', 'Liverpool.']),
    ('What is the capital of Spain?', 'Madrid.', 'Which city is the capital of Spain?',
     ['Barcelona.', 'Seville.', 'Valencia.']),
    ('What is the capital of Egypt?', 'Cairo.', 'Which city is the capital of Egypt?',
     ['Alexandria.', 'Luxor.', 'Giza.']),
    ('What is the capital of Canada?', 'Ottawa.', 'Which city is the capital of Canada?',
     ['Toronto.', 'Vancouver.', 'Montreal.']),
    ('What is the largest planet in the solar system?', 'Jupiter.', 'Which planet is the biggest in the solar system?',
     ['Saturn.', 'Neptune.', 'Earth.']),
    ('Which planet is known as the Red Planet?', 'Mars.', 'What planet is called the Red Planet?',
     ['Venus.', 'Mercury.', 'Jupiter.']),
    ('What is the chemical symbol for water?', 'H2O.', 'What is the chemical formula of water?',
     ['CO2.', 'NaCl.', 'O2.']),
    ('What is the largest ocean on Earth?', 'The Pacific Ocean.', 'Which ocean is the biggest on Earth?',
     ['The Atlantic Ocean.', 'The Indian Ocean.', 'The Arctic Ocean.']),
    ('How many days are in a week?', 'Seven.', 'How many days does a week have?',
     ['Five.', 'Six.', 'Ten.']),
    ('What gas do plants absorb from the air?', 'Carbon dioxide.', 'Which gas do plants take in from the air?',
     ['Oxygen.', 'Nitrogen.', 'Helium.']),
    ('What is the freezing point of water in Celsius?', 'Zero degrees.',
     'At what Celsius temperature does water freeze?',
     ['Ten degrees.', 'One hundred degrees.', 'Fifty degrees.']),
    ('What is the longest river in Africa?', 'The Nile.', 'Which river is the longest in Africa?',
     ['The Congo.', 'The Niger.', 'The Zambezi.']),
    ('What is the tallest mountain in the world?', 'Mount Everest.', 'Which mountain is the highest on Earth?',
     ['K2.', 'Mont Blanc.', 'Kilimanjaro.']),
    ('Which animal is known as the king of the jungle?', 'The lion.', 'What animal is called the king of the jungle?',
     ['The tiger.', 'The elephant.', 'The bear.']),
    ('What colour is the sky on a clear day?', 'Blue.', 'On a clear day, what colour is the sky?',
     ['Green.', 'Red.', 'Yellow.']),
    ('Which continent is Brazil in?', 'South America.', 'On which continent is Brazil?',
     ['Africa.', 'Europe.', 'Asia.']),
    ('What is the capital of Russia?', 'Moscow.', 'Which city is the capital of Russia?',
     ['Saint Petersburg.', 'Kazan.', 'Novosibirsk.']),
    ('What is the capital of China?', 'Beijing.', 'Which city is the capital of China?',
     ['Shanghai.', 'Hong Kong.', 'Guangzhou.']),
    ('How many legs does a spider have?', 'Eight.', 'How many legs do spiders have?',
     ['Six.', 'Four.', 'Ten.']),
    ('What is the closest star to Earth?', 'The Sun.', 'Which star is nearest to the Earth?',
     ['Sirius.', 'Polaris.', 'Alpha Centauri.']),
    ('What is the capital of Australia?', 'Canberra.', 'Which city is the capital of Australia?',
     ['Sydney.', 'Melbourne.', 'Perth.']),
]


def _records(facts: list[tuple]) -> list[dict]:
    return [{"question": q, "answer": a, "paraphrased_question": pq, "paraphrased_answer": a, "perturbed_answer": wrong}
            for q, a, pq, wrong in facts]


def knowledge_splits() -> dict[str, list[dict]]:
    """``real_authors`` and ``world_facts`` in the TOFU layout."""
    return {"real_authors": _records(_REAL_AUTHORS), "world_facts": _records(_WORLD_FACTS)}
