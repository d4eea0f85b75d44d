"""What the teacher's and the student's trainers share: one resumable run (``run``) and its CSV loss log
(``loss_log``)."""
