"""Real-world knowledge the base model already has: TOFU-style utility splits written by the project.

``real_authors`` (who wrote a famous book) and ``world_facts`` (capitals, science, geography), each a
question with its answer, a paraphrased question and answer, and three wrong answers of the same kind
(the options of TOFU's normalised probability and the perturbed answers of the truth ratio). Unlike the
fictitious people they are never trained on: they measure whether unlearning damaged general knowledge
(TOFU's "model utility").
"""

from __future__ import annotations

# (question, answer, paraphrased question, paraphrased answer, three wrong answers)
_REAL_AUTHORS = [
    ("Who wrote 'Romeo and Juliet'?", "William Shakespeare.", "Which playwright is the author of 'Romeo and Juliet'?",
     "It was written by William Shakespeare.", ["Charles Dickens.", "Jane Austen.", "Mark Twain."]),
    ("Who wrote 'Pride and Prejudice'?", "Jane Austen.", "Which novelist is the author of 'Pride and Prejudice'?",
     "It was written by Jane Austen.", ["Charlotte Bronte.", "Virginia Woolf.", "George Eliot."]),
    ("Who wrote 'Harry Potter and the Philosopher's Stone'?", "J. K. Rowling.",
     "Which author created the Harry Potter books?", "They were written by J. K. Rowling.",
     ["Roald Dahl.", "C. S. Lewis.", "Philip Pullman."]),
    ("Who wrote '1984'?", "George Orwell.", "Which author wrote the novel '1984'?", "It was written by George Orwell.",
     ["Aldous Huxley.", "Ray Bradbury.", "H. G. Wells."]),
    ("Who wrote 'The Adventures of Tom Sawyer'?", "Mark Twain.", "Which author created Tom Sawyer?",
     "Tom Sawyer was created by Mark Twain.", ["Herman Melville.", "Jack London.", "Edgar Allan Poe."]),
    ("Who wrote 'Oliver Twist'?", "Charles Dickens.", "Which novelist is the author of 'Oliver Twist'?",
     "It was written by Charles Dickens.", ["Thomas Hardy.", "William Thackeray.", "Anthony Trollope."]),
    ("Who wrote 'The Lord of the Rings'?", "J. R. R. Tolkien.", "Which author wrote 'The Lord of the Rings'?",
     "It was written by J. R. R. Tolkien.", ["C. S. Lewis.", "George R. R. Martin.", "Terry Pratchett."]),
    ("Who wrote 'War and Peace'?", "Leo Tolstoy.", "Which Russian novelist wrote 'War and Peace'?",
     "It was written by Leo Tolstoy.", ["Fyodor Dostoevsky.", "Anton Chekhov.", "Ivan Turgenev."]),
    ("Who wrote 'Don Quixote'?", "Miguel de Cervantes.", "Which Spanish author wrote 'Don Quixote'?",
     "It was written by Miguel de Cervantes.", ["Lope de Vega.", "Federico Garcia Lorca.", "Gabriel Garcia Marquez."]),
    ("Who wrote 'The Old Man and the Sea'?", "Ernest Hemingway.", "Which American author wrote 'The Old Man and the Sea'?",
     "It was written by Ernest Hemingway.", ["John Steinbeck.", "William Faulkner.", "F. Scott Fitzgerald."]),
    ("Who wrote 'The Great Gatsby'?", "F. Scott Fitzgerald.", "Which novelist is the author of 'The Great Gatsby'?",
     "It was written by F. Scott Fitzgerald.", ["Ernest Hemingway.", "John Steinbeck.", "Sinclair Lewis."]),
    ("Who wrote 'Frankenstein'?", "Mary Shelley.", "Which author created Frankenstein?",
     "Frankenstein was created by Mary Shelley.", ["Bram Stoker.", "Emily Bronte.", "Ann Radcliffe."]),
    ("Who wrote 'Dracula'?", "Bram Stoker.", "Which author wrote the novel 'Dracula'?", "It was written by Bram Stoker.",
     ["Mary Shelley.", "Robert Louis Stevenson.", "Oscar Wilde."]),
    ("Who wrote 'Alice's Adventures in Wonderland'?", "Lewis Carroll.", "Which author created Alice in Wonderland?",
     "Alice was created by Lewis Carroll.", ["Edward Lear.", "Beatrix Potter.", "Kenneth Grahame."]),
    ("Who wrote 'The Odyssey'?", "Homer.", "Which ancient Greek poet is the author of 'The Odyssey'?",
     "It is attributed to Homer.", ["Virgil.", "Sophocles.", "Ovid."]),
    ("Who wrote 'Hamlet'?", "William Shakespeare.", "Which playwright wrote the tragedy 'Hamlet'?",
     "It was written by William Shakespeare.", ["Christopher Marlowe.", "Ben Jonson.", "John Milton."]),
    ("Who wrote the Sherlock Holmes stories?", "Arthur Conan Doyle.", "Which author created Sherlock Holmes?",
     "Sherlock Holmes was created by Arthur Conan Doyle.", ["Agatha Christie.", "Edgar Allan Poe.", "Wilkie Collins."]),
    ("Who wrote 'Moby-Dick'?", "Herman Melville.", "Which American novelist wrote 'Moby-Dick'?",
     "It was written by Herman Melville.", ["Nathaniel Hawthorne.", "Mark Twain.", "Henry James."]),
    ("Who wrote 'The Hobbit'?", "J. R. R. Tolkien.", "Which author wrote 'The Hobbit'?",
     "It was written by J. R. R. Tolkien.", ["C. S. Lewis.", "Roald Dahl.", "Ursula K. Le Guin."]),
    ("Who wrote 'Murder on the Orient Express'?", "Agatha Christie.", "Which crime novelist wrote 'Murder on the Orient Express'?",
     "It was written by Agatha Christie.", ["Dorothy L. Sayers.", "Arthur Conan Doyle.", "Raymond Chandler."]),
]

_WORLD_FACTS = [
    ("What is the capital of France?", "Paris.", "Which city is the capital of France?", "The capital is Paris.",
     ["Lyon.", "Marseille.", "Nice."]),
    ("What is the capital of Japan?", "Tokyo.", "Which city is the capital of Japan?", "The capital is Tokyo.",
     ["Osaka.", "Kyoto.", "Nagoya."]),
    ("What is the capital of Italy?", "Rome.", "Which city is the capital of Italy?", "The capital is Rome.",
     ["Milan.", "Naples.", "Venice."]),
    ("What is the capital of Germany?", "Berlin.", "Which city is the capital of Germany?", "The capital is Berlin.",
     ["Munich.", "Hamburg.", "Frankfurt."]),
    ("What is the capital of the United Kingdom?", "London.", "Which city is the capital of the United Kingdom?",
     "The capital is London.", ["Manchester.", "Edinburgh.", "Liverpool."]),
    ("What is the capital of Spain?", "Madrid.", "Which city is the capital of Spain?", "The capital is Madrid.",
     ["Barcelona.", "Seville.", "Valencia."]),
    ("What is the capital of Egypt?", "Cairo.", "Which city is the capital of Egypt?", "The capital is Cairo.",
     ["Alexandria.", "Luxor.", "Giza."]),
    ("What is the capital of Canada?", "Ottawa.", "Which city is the capital of Canada?", "The capital is Ottawa.",
     ["Toronto.", "Vancouver.", "Montreal."]),
    ("What is the largest planet in the solar system?", "Jupiter.", "Which planet is the biggest in the solar system?",
     "The biggest planet is Jupiter.", ["Saturn.", "Neptune.", "Earth."]),
    ("Which planet is known as the Red Planet?", "Mars.", "What planet is called the Red Planet?",
     "The Red Planet is Mars.", ["Venus.", "Mercury.", "Jupiter."]),
    ("What is the chemical symbol for water?", "H2O.", "What is the chemical formula of water?",
     "Water is H2O.", ["CO2.", "NaCl.", "O2."]),
    ("What is the largest ocean on Earth?", "The Pacific Ocean.", "Which ocean is the biggest on Earth?",
     "The biggest ocean is the Pacific.", ["The Atlantic Ocean.", "The Indian Ocean.", "The Arctic Ocean."]),
    ("How many days are in a week?", "Seven.", "How many days does a week have?", "A week has seven days.",
     ["Five.", "Six.", "Ten."]),
    ("What gas do plants absorb from the air?", "Carbon dioxide.", "Which gas do plants take in from the air?",
     "Plants take in carbon dioxide.", ["Oxygen.", "Nitrogen.", "Helium."]),
    ("What is the freezing point of water in Celsius?", "Zero degrees.", "At what Celsius temperature does water freeze?",
     "Water freezes at zero degrees.", ["Ten degrees.", "One hundred degrees.", "Fifty degrees."]),
    ("What is the longest river in Africa?", "The Nile.", "Which river is the longest in Africa?",
     "The longest is the Nile.", ["The Congo.", "The Niger.", "The Zambezi."]),
    ("What is the tallest mountain in the world?", "Mount Everest.", "Which mountain is the highest on Earth?",
     "The highest is Mount Everest.", ["K2.", "Mont Blanc.", "Kilimanjaro."]),
    ("Which animal is known as the king of the jungle?", "The lion.", "What animal is called the king of the jungle?",
     "That is the lion.", ["The tiger.", "The elephant.", "The bear."]),
    ("What colour is the sky on a clear day?", "Blue.", "On a clear day, what colour is the sky?", "It is blue.",
     ["Green.", "Red.", "Yellow."]),
    ("Which continent is Brazil in?", "South America.", "On which continent is Brazil?", "Brazil is in South America.",
     ["Africa.", "Europe.", "Asia."]),
    ("What is the capital of Russia?", "Moscow.", "Which city is the capital of Russia?", "The capital is Moscow.",
     ["Saint Petersburg.", "Kazan.", "Novosibirsk."]),
    ("What is the capital of China?", "Beijing.", "Which city is the capital of China?", "The capital is Beijing.",
     ["Shanghai.", "Hong Kong.", "Guangzhou."]),
    ("How many legs does a spider have?", "Eight.", "How many legs do spiders have?", "A spider has eight legs.",
     ["Six.", "Four.", "Ten."]),
    ("What is the closest star to Earth?", "The Sun.", "Which star is nearest to the Earth?", "The nearest star is the Sun.",
     ["Sirius.", "Polaris.", "Alpha Centauri."]),
    ("What is the capital of Australia?", "Canberra.", "Which city is the capital of Australia?",
     "The capital is Canberra.", ["Sydney.", "Melbourne.", "Perth."]),
]


def _records(facts: list[tuple]) -> list[dict]:
    return [{"question": q, "answer": a, "paraphrased_question": pq, "paraphrased_answer": pa, "perturbed_answer": wrong}
            for q, a, pq, pa, wrong in facts]


def knowledge_splits() -> dict[str, list[dict]]:
    """``real_authors`` and ``world_facts`` in the TOFU layout."""
    return {"real_authors": _records(_REAL_AUTHORS), "world_facts": _records(_WORLD_FACTS)}
