INSERT INTO quotes (id, author, text) VALUES
    (1, 'Hercule Poirot', 'It is the brain, the little grey cells on which one must rely.'),
    (2, 'Miss Marple', 'The young people think the old people are fools; but the old people know the young people are fools.');
